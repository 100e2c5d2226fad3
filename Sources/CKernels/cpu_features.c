#include "ck_cpu.h"

int ck_cpu_features(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int f = 0;
    if (__builtin_cpu_supports("avx2")) f |= CK_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= CK_CPU_FMA;
    if (__builtin_cpu_supports("f16c")) f |= CK_CPU_F16C;
    if (__builtin_cpu_supports("avx512f")) f |= CK_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= CK_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= CK_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512dq")) f |= CK_CPU_AVX512DQ;
    if (__builtin_cpu_supports("avx512bf16")) f |= CK_CPU_AVX512BF16;
    if (__builtin_cpu_is("amd")) f |= CK_CPU_AMD;
    if (__builtin_cpu_is("intel")) f |= CK_CPU_INTEL;
    return f;
#else
    return 0;
#endif
}
