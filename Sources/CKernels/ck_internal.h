// Private declarations shared by the CKernels translation units (not part of the public API).
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H

#include "ckernels.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// Functions that use AVX2/FMA/F16C carry this attribute; the translation units themselves are
// compiled for baseline x86-64, so nothing outside these functions may use those instructions.
#if defined(__x86_64__) || defined(__i386__)
#define CK_X86 1
#define CK_AVX2 __attribute__((target("avx2,fma,f16c")))
// Functions that execute AVX-512 instructions; reached only at simd level 2 (see matmul.c).
#define CK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#else
#define CK_X86 0
#define CK_AVX2
#define CK_AVX512
#endif
#define CK_INLINE static inline __attribute__((always_inline))

#if CK_X86
#include <immintrin.h>
/// The sum of v's eight lanes, ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)): the order the
/// int8 and 4-bit kernels and the 4-bit quantiser state in their headers.
CK_INLINE CK_AVX2 float ck_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/// The largest of v's eight lanes, folded as ck_hsum256 with max for add; vmaxps returns its
/// second operand when either is NaN, so a NaN lane is dropped unless the running maximum is NaN.
CK_INLINE CK_AVX2 float ck_hmax256(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/// The sum of v's sixteen lanes: s = v[0..7] + v[8..15] lane by lane, then folded as ck_hsum256.
CK_INLINE CK_AVX512 float ck_hsum512(__m512 v) {
    return ck_hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
#endif

// ---- scalar element conversions (exact, portable) -------------------------------------------

static inline float ck_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t ck_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float ck_bf16_to_f32(uint16_t h) { return ck_bits_f32((uint32_t)h << 16); }

static inline uint16_t ck_f32_to_bf16(float f) {
    uint32_t u = ck_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); // NaN stays (quiet) NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
    return (uint16_t)(u >> 16);
}

static inline float ck_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return ck_bits_f32(s | 0x7f800000u | (m ? (0x400000u | (m << 13)) : 0)); // inf / quiet NaN
    if (e == 0) {
        if (m == 0) return ck_bits_f32(s);
        // subnormal: m * 2^-24, exact in f32
        float v = (float)m * (1.0f / 16777216.0f);
        return s ? -v : v;
    }
    return ck_bits_f32(s | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t ck_f32_to_f16(float f) {
    uint32_t u = ck_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) // inf or NaN (NaN: quiet, top payload bits kept, as F16C does)
        return (uint16_t)(sign | 0x7c00u | (u > 0x7f800000u ? (0x200u | ((u >> 13) & 0x3ffu)) : 0));
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // >= 65520 rounds to inf
    uint32_t e = u >> 23;
    if (e < 113) { // result is subnormal (or zero / smallest normal after rounding)
        if (e < 102) return sign; // < 2^-25: rounds to zero
        uint32_t mant = (u & 0x7fffffu) | 0x800000u, shift = 126 - e; // 14..24
        uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t h = ((e - 112) << 10) | ((u >> 13) & 0x3ffu), rem = u & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; // carry may reach the exponent: fine
    return (uint16_t)(sign | h);
}

static inline float ck_load_elem(ck_dtype dt, const void *p, size_t i) {
    switch (dt) {
    case CK_F32: { float f; memcpy(&f, (const char *)p + 4 * i, 4); return f; }
    case CK_F16: { uint16_t h; memcpy(&h, (const char *)p + 2 * i, 2); return ck_f16_to_f32(h); }
    default: { uint16_t h; memcpy(&h, (const char *)p + 2 * i, 2); return ck_bf16_to_f32(h); }
    }
}

/// Bytes per element (CK_Q4 has no whole byte per element: see ck_q4.h for its layout).
static inline size_t ck_dt_size(ck_dtype dt) { return dt == CK_F32 ? 4 : dt == CK_I8 ? 1 : 2; }
/// The quantised formats, which carry scales beside the values and have no scalar ck_matmul path.
static inline int ck_dt_quantized(ck_dtype dt) { return dt == CK_I8 || dt == CK_Q4; }

// ---- scratch memory ------------------------------------------------------------------------

typedef struct { float *p; size_t cap; } ck_buf;
/// Grows b to hold at least `count` floats (64-byte aligned). Returns b->p or NULL.
float *ck_buf_reserve(ck_buf *b, size_t count);

typedef struct {
    ck_buf wc;    // converted weight block (GEMM path)
    ck_buf cs;    // accumulator tiles (GEMM path)
    ck_buf xprep; // prepared activations when ck_matmul_range is called directly
} ck_scratch;
/// Per-thread scratch (freed when the thread exits). NULL only if out of memory.
ck_scratch *ck_tls_scratch(void);

// ---- kernels -------------------------------------------------------------------------------

/// Activations prepared once per call for the AVX2 kernels.
typedef struct {
    int small;          // 1: dot-product kernels (small n); 0: packed GEMM kernels
    const float *xs;    // small: x as the kernels read it (bf16: even/odd permuted copy)
    size_t xs_ld;
    const float *xp;    // GEMM: x packed in groups of 16 tokens, [group][k][16]
    const void *scales; // GEMM only: CK_I8 one f32 per weight row; CK_Q4 (rows, nb) f16 block scales
} ck_xprep;

/// Token groups of the small paths: ceil(n/size) groups of balanced sizes <= size (sizes differ by
/// one at most, the larger first); gsize and gstart hold ceil(n/size) entries.
static inline int ck_token_groups(int n, int size, int *gsize, int *gstart) {
    const int ngroups = (n + size - 1) / size;
    for (int g = 0, t = 0; g < ngroups; g++) {
        gsize[g] = n / ngroups + (g < n % ngroups);
        gstart[g] = t;
        t += gsize[g];
    }
    return ngroups;
}

/// The AVX-512 small-path kernels (kern_avx512.c), used at simd level 2 in place of the AVX2 ones:
/// floats of staged activations, the staging (groups interleaved per 32-block, row stride
/// round32(in)), and output rows [o0, o1) (0, or -1 when scratch could not be allocated).
size_t ck_avx512_prep_floats(int in, int n);
void ck_avx512_tune(const char *key, int value);
/// The int8 kernel's tuning hook (q8chunk); returns whether it took the key.
int ck_q8_tune(const char *key, int value);
void ck_avx512_stage(ck_dtype dt, int in, const float *x, int ldx, int n, float *xs);
int ck_avx512_range(ck_dtype dt, const void *W, int in, const float *xs, size_t xld, int n, float *y,
                    size_t ldy, int o0, int o1, ck_scratch *s);

int ck_avx2_use_small(int n);
int ck_avx2_small_nmax(void);
/// Internal tuning hook (benchmarks while tuning): small_nmax, r1, pf, pfd, rb, xbytes.
void ck_kernels_tune(const char *key, int value);
/// Floats of scratch ck_avx2_prepare needs (0: none).
size_t ck_avx2_prep_floats(ck_dtype dt, int in, int n);
/// Small path: fills px (using buf when needed). GEMM path: sets px->xp = buf; the packing itself
/// is done by ck_avx2_pack_groups (it can be split over threads by group).
void ck_avx2_prepare(ck_dtype dt, int in, const float *x, int ldx, int n, float *buf, ck_xprep *px);
void ck_avx2_pack_groups(int in, const float *x, int ldx, int n, float *xp, int g0, int g1);
/// Output rows [o0, o1). Returns 0 on success, -1 if scratch could not be allocated.
int ck_avx2_range(ck_dtype dt, const void *W, int in, const float *x, int ldx, const ck_xprep *px,
                  int n, float *y, int ldy, int o0, int o1, ck_scratch *s);
/// ck_matmul's body, with the scales of a quantised dtype (CK_I8: one f32 per row; CK_Q4: its
/// f16 block scales), which take the GEMM path only (ck_matmul_q8 / ck_matmul_q4 for large n).
/// Returns 0, or -1 when the AVX2 kernels or their scratch are unavailable (nothing written then).
int ck_matmul_scaled(ck_dtype dt, const void *W, const void *scales, int out, int in, const float *x, int ldx,
                     int n, float *y, int ldy);

void ck_scalar_range(ck_dtype dt, const void *W, int in, const float *x, int ldx, int n,
                     float *y, int ldy, int o0, int o1);

/// Attention's inner loops (ck_ops.h states the arithmetic), d % 8 == 0: s[t] = dot(q, K row t) *
/// scale for t < count, and acc[i] += e[t] * V row t [i] for t ascending.
void ck_avx2_attention_scores(const float *q, const float *K, size_t stride, int count, int d, float scale, float *s);
void ck_avx2_attention_accumulate(const float *e, const float *V, size_t stride, int count, int d, float *acc);

void ck_avx2_to_f32(ck_dtype dt, const void *src, float *dst, size_t count);
void ck_avx2_from_f32(ck_dtype dt, const float *src, void *dst, size_t count);

/// Row alignment of the per-thread chunks (a multiple of every microkernel's row count).
#define CK_ROW_ALIGN 24

// ---- thread pool ---------------------------------------------------------------------------

typedef void (*ck_task_fn)(void *ctx, int tid, int nth);
/// Runs fn(ctx, tid, nth) for tid in [0, nth) on the pool (the caller is tid 0) and waits.
void ck_pool_run(ck_task_fn fn, void *ctx, int nth);
int ck_pool_threads(void);
/// 1 on a thread that is running a pool task.
int ck_pool_in_task(void);

#endif
