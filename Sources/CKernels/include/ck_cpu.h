// CPU features as the running processor reports them (CPUID), for choosing kernel sets —
// ours and OpenBLAS's.
#ifndef CK_CPU_H
#define CK_CPU_H
#ifdef __cplusplus
extern "C" {
#endif
/// Bit set of the features below that this CPU has; 0 on non-x86 machines.
enum {
    CK_CPU_AVX2 = 1, CK_CPU_FMA = 2, CK_CPU_F16C = 4,
    CK_CPU_AVX512F = 8, CK_CPU_AVX512BW = 16, CK_CPU_AVX512VL = 32, CK_CPU_AVX512DQ = 64,
    CK_CPU_AVX512BF16 = 128, CK_CPU_AMD = 256, CK_CPU_INTEL = 512
};
int ck_cpu_features(void);
#ifdef __cplusplus
}
#endif
#endif
