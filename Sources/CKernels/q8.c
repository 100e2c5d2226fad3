// int8 weight kernels (see ck_q8.h): per-row symmetric weight scales; activations quantised to
// int16 in blocks of CK_Q8_XBLOCK, so each block's product is an exact integer dot product.
#include "ck_q8.h"
#include "ck_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define Q8_X86 1
#else
#define Q8_X86 0
#endif

void ck_q8_quantize_rows(ck_dtype dt, const void *W, int cols, int8_t *Q, float *scales, int r0, int r1) {
    float *row = (float *)malloc(sizeof(float) * (size_t)cols);
    if (!row) { fprintf(stderr, "ck_q8_quantize_rows: out of memory\n"); abort(); } // Q would stay unwritten
    const size_t esize = dt == CK_F32 ? 4 : 2;
    for (int r = r0; r < r1; r++) {
        const size_t base = (size_t)r * cols;
        ck_to_f32(dt, (const char *)W + base * esize, row, (size_t)cols);
        float maxAbs = 0;
        for (int k = 0; k < cols; k++) { float a = fabsf(row[k]); if (a > maxAbs) maxAbs = a; }
        float scale = maxAbs > 0 ? maxAbs / 127.0f : 1.0f;
        float inv = 1.0f / scale;
        scales[r] = scale;
        for (int k = 0; k < cols; k++) {
            float q = roundf(row[k] * inv);
            Q[base + k] = (int8_t)(q > 127 ? 127 : (q < -127 ? -127 : q));
        }
    }
    free(row);
}

/// Activation rows quantised per block: xq (n, nb * 32) int16 (zero past `in`), xd (n, nb) f32.
typedef struct { int16_t *xq; float *xd; int nb; } q8_activations;

#if Q8_X86
/// One whole block as the scalar loop below quantises it, 8 lanes at a time: the maximum is
/// order-free (vmaxps keeps its second operand when the first is NaN, as the scalar `>` skips it),
/// and vcvtps2dq rounds to nearest even as lrintf does; the values lie within +-32767, so the
/// saturating pack is the scalar cast.
CK_AVX2 static void quantize_block_avx2(const float *x, int16_t *q, float *d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < CK_Q8_XBLOCK; k += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    const float mAbs = _mm_cvtss_f32(h);
    const __m256 inv = _mm256_set1_ps(mAbs > 0 ? 32767.0f / mAbs : 0);
    *d = mAbs / 32767.0f;
    for (int k = 0; k < CK_Q8_XBLOCK; k += 16) {
        const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv));
        const __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), inv));
        _mm256_storeu_si256((__m256i *)(q + k), _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xd8));
    }
}
#endif

static void quantize_activations(const float *x, int ldx, int n, int in, q8_activations *a) {
    const int nb = a->nb;
    const int vector = Q8_X86 && ck_simd_level() > 0;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        int16_t *q = a->xq + (size_t)t * nb * CK_Q8_XBLOCK;
        for (int b = 0; b < nb; b++) {
            const int k0 = b * CK_Q8_XBLOCK, k1 = k0 + CK_Q8_XBLOCK < in ? k0 + CK_Q8_XBLOCK : in;
#if Q8_X86
            if (vector && k1 - k0 == CK_Q8_XBLOCK) {
                quantize_block_avx2(xt + k0, q + k0, &a->xd[(size_t)t * nb + b]);
                continue;
            }
#endif
            float mAbs = 0;
            for (int k = k0; k < k1; k++) if (fabsf(xt[k]) > mAbs) mAbs = fabsf(xt[k]);
            const float inv = mAbs > 0 ? 32767.0f / mAbs : 0;
            a->xd[(size_t)t * nb + b] = mAbs / 32767.0f;
            for (int k = k0; k < k0 + CK_Q8_XBLOCK; k++) q[k] = k < k1 ? (int16_t)lrintf(xt[k] * inv) : 0;
        }
    }
}

/// Sum over blocks [b0, nb) of d_x[b] * (integer dot product of the block), one row of weights.
static float row_blocks_scalar(const int8_t *q, int in, const int16_t *xq, const float *xd, int b0, int nb) {
    float acc = 0;
    for (int b = b0; b < nb; b++) {
        const int k0 = b * CK_Q8_XBLOCK, k1 = k0 + CK_Q8_XBLOCK < in ? k0 + CK_Q8_XBLOCK : in;
        int32_t dot = 0;
        for (int k = k0; k < k1; k++) dot += (int32_t)q[k] * xq[k];
        acc += (float)dot * xd[b];
    }
    return acc;
}

static void q8_scalar(const int8_t *Q, const float *scales, int in, const q8_activations *a, int n,
                      float *y, int ldy, int o0, int o1) {
    const int nb = a->nb;
    for (int o = o0; o < o1; o++)
        for (int t = 0; t < n; t++)
            y[(size_t)t * ldy + o] = scales[o] * row_blocks_scalar(Q + (size_t)o * in, in, a->xq + (size_t)t * nb * CK_Q8_XBLOCK,
                                                                   a->xd + (size_t)t * nb, 0, nb);
}

#if Q8_X86
#define Q8_AVX2 CK_AVX2
#define CK_INLINE_Q8 static inline __attribute__((always_inline))

/// Each block of CK_Q8_XBLOCK (256) is an exact integer dot product: the weights widened to int16
/// and multiplied pairwise with the int16 activations into int32 lanes, summed in integers over the
/// block (|lane| <= 32 * 127 * 32767 < 2^31 on AVX2, half that on AVX-512), then converted to f32
/// (rounded to nearest where a lane exceeds 2^24) and scaled by d_x into one f32 accumulator per
/// (row, activation row) with one fused multiply-add per block, in block order. int16 activations
/// keep the numerics close to f32 activations (relative error 2^-16 of the block's largest), which
/// keeps a draft's acceptance; the block of 256 rather than 32 is what makes the kernel cheap: per
/// 32 weights an activation row costs one multiply-add into integers (vpmaddwd + vpaddd)
/// instead of a multiply, a conversion and an f32 fused multiply-add, so a few rows at once no
/// longer make it bound by its vector instructions. Rows are summed one at a time, in memory
/// order: the matrix is read as one sequential stream, which the hardware prefetchers follow far
/// better than 4-row tiles of 2-8 KiB rows (measured on a 2-core Zen 3: 25-30 GB/s against 21-23
/// GB/s for 4-row tiles on the 128256 x 2048 head), plus a software prefetch CK_Q8_PREFETCH bytes
/// ahead of the stream. Activation rows go in tiles of up to CK_Q8_TILE, which share each widened
/// weight vector; the row is re-read from L1 for every tile. A partial last block is summed in
/// scalar code (row_blocks_scalar) and added after the horizontal sum (ck_hsum256 / ck_hsum512).
/// Every (row, activation row) has its own accumulators, so row t is bit-identical to a one-row call.
#define CK_Q8_PREFETCH 2048
#define CK_Q8_TILE 3
CK_INLINE_Q8 Q8_AVX2 void q8_tile(const int8_t *q, int in, const q8_activations *a, int t0, const int T,
                                   float scale, float *y, int ldy, int o, int prefetch) {
    const int nb = a->nb, full = in / CK_Q8_XBLOCK;
    __m256 acc[CK_Q8_TILE];
    const int16_t *xq[CK_Q8_TILE];
    const float *xd[CK_Q8_TILE];
    for (int t = 0; t < T; t++) {
        xq[t] = a->xq + (size_t)(t0 + t) * nb * CK_Q8_XBLOCK;
        xd[t] = a->xd + (size_t)(t0 + t) * nb;
        acc[t] = _mm256_setzero_ps();
    }
    for (int b = 0; b < full; b++) {
        __m256i s0[CK_Q8_TILE], s1[CK_Q8_TILE];
        for (int t = 0; t < T; t++) s0[t] = s1[t] = _mm256_setzero_si256();
        for (int k = b * CK_Q8_XBLOCK; k < (b + 1) * CK_Q8_XBLOCK; k += 32) {
            if (prefetch && !(k & 63)) _mm_prefetch((const char *)(q + k) + CK_Q8_PREFETCH, _MM_HINT_T0);
            const __m256i wl = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + k)));
            const __m256i wh = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + k + 16)));
            for (int t = 0; t < T; t++) {
                s0[t] = _mm256_add_epi32(s0[t], _mm256_madd_epi16(wl, _mm256_loadu_si256((const __m256i *)(xq[t] + k))));
                s1[t] = _mm256_add_epi32(s1[t], _mm256_madd_epi16(wh, _mm256_loadu_si256((const __m256i *)(xq[t] + k + 16))));
            }
        }
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s0[t], s1[t])), _mm256_set1_ps(xd[t][b]), acc[t]);
    }
    for (int t = 0; t < T; t++) {
        float s = ck_hsum256(acc[t]);
        if (full < nb) s += row_blocks_scalar(q, in, xq[t], xd[t], full, nb);
        y[(size_t)(t0 + t) * ldy + o] = s * scale;
    }
}

Q8_AVX2 static void q8_avx2(const int8_t *Q, const float *scales, int in, const q8_activations *a, int n,
                            float *y, int ldy, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const int8_t *q = Q + (size_t)o * in;
        int t = 0;
        for (; t + 3 <= n; t += 3) q8_tile(q, in, a, t, 3, scales[o], y, ldy, o, t == 0);
        if (n - t == 2) q8_tile(q, in, a, t, 2, scales[o], y, ldy, o, t == 0);
        else if (n - t == 1) q8_tile(q, in, a, t, 1, scales[o], y, ldy, o, t == 0);
    }
}

/// The AVX-512 form (simd level 2), for the same reason as kern_avx512.c: more activation rows per
/// weight read before the vector units, not the weight stream, set the pace. 32 weights are one zmm
/// of int16; per activation row each takes a vpmaddwd into one of four int32 accumulators (the
/// 32-element steps j = 0..3 mod 4 of the block), summed (s0 + s1) + (s2 + s3), then converted and
/// scaled as above; tiles of up to CK_Q8_TILE512 activation rows share each widened weight vector.
/// (AVX512_VNNI's vpdpwssd, multiply and add in one instruction, measured no faster on a Zen 4.)
#define CK_Q8_TILE512 4
// Into L2, 4 KiB ahead: on a 2-core Zen 4 (8 layers of the 1B shapes + the head, 7 rounds against
// the block-of-32 kernel in the same process) n = 1 0.88-0.90x its time, n = 4 0.68x, n = 8
// 0.72-0.77x, against 0.96-1.02x, 0.78-0.84x and 0.80-0.88x with CK_Q8_PREFETCH into L1.
#define CK_Q8_PREFETCH512 4096
CK_INLINE_Q8 CK_AVX512 void q8_tile512(const int8_t *q, int in, const q8_activations *a, int t0, const int T,
                                       float scale, float *y, int ldy, int o, int prefetch) {
    const int nb = a->nb, full = in / CK_Q8_XBLOCK;
    __m512 acc[CK_Q8_TILE512];
    const int16_t *xq[CK_Q8_TILE512];
    const float *xd[CK_Q8_TILE512];
    for (int t = 0; t < T; t++) {
        xq[t] = a->xq + (size_t)(t0 + t) * nb * CK_Q8_XBLOCK;
        xd[t] = a->xd + (size_t)(t0 + t) * nb;
        acc[t] = _mm512_setzero_ps();
    }
    for (int b = 0; b < full; b++) {
        __m512i s[CK_Q8_TILE512][4];
        for (int t = 0; t < T; t++) s[t][0] = s[t][1] = s[t][2] = s[t][3] = _mm512_setzero_si512();
        for (int k = b * CK_Q8_XBLOCK; k < (b + 1) * CK_Q8_XBLOCK; k += 128) {
            if (prefetch) {
                _mm_prefetch((const char *)(q + k) + CK_Q8_PREFETCH512, _MM_HINT_T1);
                _mm_prefetch((const char *)(q + k) + CK_Q8_PREFETCH512 + 64, _MM_HINT_T1);
            }
            for (int j = 0; j < 4; j++) {
                const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + k + 32 * j)));
                for (int t = 0; t < T; t++)
                    s[t][j] = _mm512_add_epi32(s[t][j], _mm512_madd_epi16(w, _mm512_loadu_si512((const void *)(xq[t] + k + 32 * j))));
            }
        }
        for (int t = 0; t < T; t++) {
            const __m512i p = _mm512_add_epi32(_mm512_add_epi32(s[t][0], s[t][1]), _mm512_add_epi32(s[t][2], s[t][3]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(xd[t][b]), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) {
        float s = ck_hsum512(acc[t]);
        if (full < nb) s += row_blocks_scalar(q, in, xq[t], xd[t], full, nb);
        y[(size_t)(t0 + t) * ldy + o] = s * scale;
    }
}

/// Activation rows in tiles of CK_Q8_TILE512, the last tile holding the rest (T a constant in each
/// call, so every tile's loops unroll).
CK_AVX512 static void q8_avx512(const int8_t *Q, const float *scales, int in, const q8_activations *a, int n,
                                float *y, int ldy, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const int8_t *q = Q + (size_t)o * in;
        for (int t = 0; t < n; t += CK_Q8_TILE512) {
            const int first = t == 0;
            switch (n - t < CK_Q8_TILE512 ? n - t : CK_Q8_TILE512) {
            case 1: q8_tile512(q, in, a, t, 1, scales[o], y, ldy, o, first); break;
            case 2: q8_tile512(q, in, a, t, 2, scales[o], y, ldy, o, first); break;
            case 3: q8_tile512(q, in, a, t, 3, scales[o], y, ldy, o, first); break;
            default: q8_tile512(q, in, a, t, 4, scales[o], y, ldy, o, first); break;
            }
        }
    }
}
#endif

static void q8_rows(const int8_t *Q, const float *scales, int in, const q8_activations *a, int n,
                    float *y, int ldy, int o0, int o1) {
#if Q8_X86
    if (ck_simd_level() > 1) { q8_avx512(Q, scales, in, a, n, y, ldy, o0, o1); return; }
    if (ck_simd_level() > 0) { q8_avx2(Q, scales, in, a, n, y, ldy, o0, o1); return; }
#endif
    q8_scalar(Q, scales, in, a, n, y, ldy, o0, o1);
}

/// Scratch for the quantised activations: on the stack when small (every decode step), else heap.
/// Running out of memory here is not recoverable by the caller (y would stay unwritten), so it aborts.
#define Q8_STACK_BYTES 65536
static void *q8_scratch(q8_activations *a, int n, int in, char *stack) {
    a->nb = (in + CK_Q8_XBLOCK - 1) / CK_Q8_XBLOCK;
    const size_t dBytes = (size_t)n * a->nb * sizeof(float), qBytes = (size_t)n * a->nb * CK_Q8_XBLOCK * sizeof(int16_t);
    char *heap = NULL;
    if (dBytes + qBytes > Q8_STACK_BYTES && !(heap = malloc(dBytes + qBytes))) {
        fprintf(stderr, "ck_matmul_q8: out of memory for %zu bytes of activations\n", dBytes + qBytes);
        abort();
    }
    char *base = heap ? heap : stack;
    a->xd = (float *)base;
    a->xq = (int16_t *)(base + dBytes);
    return heap;
}

typedef struct {
    const int8_t *Q; const float *scales; int out, in; const q8_activations *a; int n; float *y; int ldy;
} q8_task;

static void q8_run(void *ctx, int tid, int nth) {
    const q8_task *t = (const q8_task *)ctx;
    int o0 = (int)((long)t->out * tid / nth), o1 = (int)((long)t->out * (tid + 1) / nth);
    if (o0 < o1) q8_rows(t->Q, t->scales, t->in, t->a, t->n, t->y, t->ldy, o0, o1);
}

void ck_matmul_q8(const int8_t *Q, const float *scales, int out, int in, const float *x, int ldx, int n,
                  float *y, int ldy) {
    // Prefill: the f32 GEMM over widened weights (see ck_q8.h); the integer kernel re-widens each
    // weight row for every activation row, which is slow for many rows.
    if (n > ck_matmul_row_independent_max() && ck_matmul_scaled(CK_I8, Q, scales, out, in, x, ldx, n, y, ldy) == 0)
        return;
    _Alignas(32) char stack[Q8_STACK_BYTES];
    q8_activations a;
    void *heap = q8_scratch(&a, n, in, stack);
    // Quantised once by the calling thread; the pool's threads share it read-only.
    quantize_activations(x, ldx, n, in, &a);
    q8_task t = {Q, scales, out, in, &a, n, y, ldy};
    ck_parallel(q8_run, &t);
    free(heap);
}
