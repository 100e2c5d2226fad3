// 4-bit weight kernels (see ck_q4.h): blocks of 32 nibbles with an f16 scale each; activations
// quantised to int8 blocks, so each block's product is an exact integer dot product.
// The quantiser must compute exactly what ck_q4.h states (the tests re-derive every block): no
// fused multiply-adds where the header describes separate roundings.
#pragma STDC FP_CONTRACT OFF
#include "ck_q4.h"
#include "ck_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// h() of ck_q4.h: to the nearest-even f16 (saturated) and back.
static float q4_half(float v) {
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    return ck_f16_to_f32(ck_f32_to_f16(v));
}

static float q4_level(float x, float d) {
    float t = rintf(x / d) + 8.0f;
    return t >= 0 ? (t <= 15 ? t : 15) : 0; // NaN (a NaN weight) becomes 0 too
}

/// A block's sum in ck_q4.h's order (that of eight vector lanes): s_j = ((t_j + t_j+8) + t_j+16)
/// + t_j+24, then ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)).
static float q4_sum(const float *t) {
    float s[8];
    for (int j = 0; j < 8; j++) s[j] = ((t[j] + t[j + 8]) + t[j + 16]) + t[j + 24];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

static float q4_error(const float *x, float d) {
    float t[CK_Q4_BLOCK];
    for (int i = 0; i < CK_Q4_BLOCK; i++) { float r = x[i] - d * (q4_level(x[i], d) - 8.0f); t[i] = r * r; }
    return q4_sum(t);
}

/// m / -8 of the block's first element of largest magnitude, as h() rounds it.
static float q4_first_scale(const float *x) {
    float m = 0;
    for (int i = 0; i < CK_Q4_BLOCK; i++) if (fabsf(x[i]) > fabsf(m)) m = x[i];
    return q4_half(m / -8.0f);
}

/// One block by ck_q4.h's rule: its scale (0 for a zero block), levels[i] = its nibbles.
static float q4_block_scalar(const float *x, float *levels) {
    float best = q4_first_scale(x);
    if (best == 0 || !isfinite(best)) { for (int i = 0; i < CK_Q4_BLOCK; i++) levels[i] = 8; return 0; }
    float txq[CK_Q4_BLOCK], tqq[CK_Q4_BLOCK];
    for (int i = 0; i < CK_Q4_BLOCK; i++) { float v = q4_level(x[i], best) - 8.0f; txq[i] = x[i] * v; tqq[i] = v * v; }
    const float sxq = q4_sum(txq), sqq = q4_sum(tqq);
    if (sqq > 0) {
        const float d2 = q4_half(sxq / sqq);
        if (d2 != 0 && isfinite(d2) && q4_error(x, d2) < q4_error(x, best)) best = d2;
    }
    for (int i = 0; i < CK_Q4_BLOCK; i++) levels[i] = q4_level(x[i], best);
    return best;
}

#if CK_X86
/// The same block, eight lanes at a time: the divisions, roundings, products and sums are those of
/// q4_block_scalar (IEEE division and rounding to nearest even are exact operations, and the sums
/// follow the lane order q4_sum spells out), so both write identical bytes; 5x faster at load.
CK_AVX2 static float q4_block_avx2(const float *x, float *levels) {
    const float best0 = q4_first_scale(x);
    if (best0 == 0 || !isfinite(best0)) { for (int i = 0; i < CK_Q4_BLOCK; i++) levels[i] = 8; return 0; }
    const __m256 eight = _mm256_set1_ps(8), zero = _mm256_setzero_ps(), fifteen = _mm256_set1_ps(15);
    __m256 v[4];
    for (int p = 0; p < 4; p++) v[p] = _mm256_loadu_ps(x + 8 * p);
#define Q4_LEVEL(V, D) _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_round_ps(_mm256_div_ps(V, D), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), eight), zero), fifteen)
    // max(t, 0) returns 0 for a NaN t (the second operand), as the scalar rule does.
    const __m256 d1 = _mm256_set1_ps(best0);
    __m256 axq = zero, aqq = zero;
    for (int p = 0; p < 4; p++) {
        const __m256 q = _mm256_sub_ps(Q4_LEVEL(v[p], d1), eight);
        const __m256 xq = _mm256_mul_ps(v[p], q), qq = _mm256_mul_ps(q, q);
        axq = p ? _mm256_add_ps(axq, xq) : xq;
        aqq = p ? _mm256_add_ps(aqq, qq) : qq;
    }
    const float sxq = ck_hsum256(axq), sqq = ck_hsum256(aqq);
    float best = best0;
    if (sqq > 0) {
        const float d2 = q4_half(sxq / sqq);
        if (d2 != 0 && isfinite(d2)) {
            __m256 e1 = zero, e2 = zero;
            const __m256 d2v = _mm256_set1_ps(d2);
            for (int p = 0; p < 4; p++) {
                const __m256 r1 = _mm256_sub_ps(v[p], _mm256_mul_ps(d1, _mm256_sub_ps(Q4_LEVEL(v[p], d1), eight)));
                const __m256 r2 = _mm256_sub_ps(v[p], _mm256_mul_ps(d2v, _mm256_sub_ps(Q4_LEVEL(v[p], d2v), eight)));
                e1 = p ? _mm256_add_ps(e1, _mm256_mul_ps(r1, r1)) : _mm256_mul_ps(r1, r1);
                e2 = p ? _mm256_add_ps(e2, _mm256_mul_ps(r2, r2)) : _mm256_mul_ps(r2, r2);
            }
            if (ck_hsum256(e2) < ck_hsum256(e1)) best = d2;
        }
    }
    const __m256 dv = _mm256_set1_ps(best);
    for (int p = 0; p < 4; p++) _mm256_storeu_ps(levels + 8 * p, Q4_LEVEL(v[p], dv));
#undef Q4_LEVEL
    return best;
}
#endif

void ck_q4_quantize_rows(ck_dtype dt, const void *W, int cols, uint8_t *Q, uint16_t *d, int r0, int r1) {
    const int nb = (cols + CK_Q4_BLOCK - 1) / CK_Q4_BLOCK, ng = (cols + CK_Q4_GROUP - 1) / CK_Q4_GROUP;
    float *row = (float *)malloc(sizeof(float) * (size_t)ng * CK_Q4_GROUP);
    if (!row) { fprintf(stderr, "ck_q4_quantize_rows: out of memory\n"); abort(); } // Q would stay unwritten
    const size_t esize = ck_dt_size(dt);
#if CK_X86
    const int simd = ck_simd_level() > 0;
#endif
    for (int r = r0; r < r1; r++) {
        ck_to_f32(dt, (const char *)W + (size_t)r * cols * esize, row, (size_t)cols);
        for (int k = cols; k < ng * CK_Q4_GROUP; k++) row[k] = 0;
        uint8_t *qr = Q + (size_t)r * ng * CK_Q4_GROUP_BYTES;
        for (int b = 0; b < nb; b++) {
            float levels[CK_Q4_BLOCK];
            const float *x = row + (size_t)b * CK_Q4_BLOCK;
#if CK_X86
            const float scale = simd ? q4_block_avx2(x, levels) : q4_block_scalar(x, levels);
#else
            const float scale = q4_block_scalar(x, levels);
#endif
            d[(size_t)r * nb + b] = ck_f32_to_f16(scale);
            // Block b is the low (even b) or high (odd b) nibbles of group b / 2.
            uint8_t *group = qr + (size_t)(b / 2) * CK_Q4_GROUP_BYTES;
            if (b & 1)
                for (int j = 0; j < CK_Q4_BLOCK; j++) group[j] = (uint8_t)(group[j] | ((int)levels[j] << 4));
            else
                for (int j = 0; j < CK_Q4_BLOCK; j++) group[j] = (uint8_t)levels[j];
        }
        if (nb & 1) // the high nibbles of a last half-filled group: zero weights
            for (int j = 0; j < CK_Q4_BLOCK; j++) qr[(size_t)(nb / 2) * CK_Q4_GROUP_BYTES + j] |= 0x80;
    }
    free(row);
}

/// Activation rows quantised for the 4-bit kernels (ck_q4.h): xq (n, nb * 32) int8 (zero past
/// `in`), xd (n, nb) f32, and per block the 16 int16 xc[i] = 8 (xq[2i] + xq[2i+1]), which turn the
/// vector kernel's u8 x s8 pair products of the nibbles into those of (nibble - 8), exactly.
typedef struct { int8_t *xq; float *xd; int16_t *xc; int nb; } q4_xq;

#define Q4_STACK_BYTES 65536
static void *q4_activations(const float *x, int ldx, int n, int in, q4_xq *a, char *stack) {
    const int nb = a->nb = (in + CK_Q4_BLOCK - 1) / CK_Q4_BLOCK;
    const size_t blocks = (size_t)n * nb, bytes = blocks * (4 + 32 + 32);
    char *heap = NULL;
    if (bytes > Q4_STACK_BYTES && !(heap = malloc(bytes))) {
        fprintf(stderr, "ck_matmul_q4: out of memory for %zu bytes of quantised activations\n", bytes);
        abort(); // y would stay unwritten, which no caller can recover from
    }
    char *base = heap ? heap : stack;
    a->xc = (int16_t *)base;
    a->xq = (int8_t *)(base + blocks * 32);
    a->xd = (float *)(base + blocks * 64);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        for (int b = 0; b < nb; b++) {
            const int k0 = b * CK_Q4_BLOCK, k1 = k0 + CK_Q4_BLOCK < in ? k0 + CK_Q4_BLOCK : in;
            float mAbs = 0;
            for (int k = k0; k < k1; k++) if (fabsf(xt[k]) > mAbs) mAbs = fabsf(xt[k]);
            const float inv = mAbs > 0 ? 127.0f / mAbs : 0;
            const size_t blk = (size_t)t * nb + b;
            int8_t *q = a->xq + blk * CK_Q4_BLOCK;
            a->xd[blk] = mAbs / 127.0f;
            for (int k = k0; k < k0 + CK_Q4_BLOCK; k++) q[k - k0] = k < k1 ? (int8_t)rintf(xt[k] * inv) : 0;
            for (int i = 0; i < 16; i++) a->xc[blk * 16 + i] = (int16_t)(8 * (q[2 * i] + q[2 * i + 1]));
        }
    }
    return heap;
}

CK_INLINE int q4_nibble(const uint8_t *q, int k) { // element k of a row (ck_q4.h's layout)
    const uint8_t byte = q[(k / CK_Q4_GROUP) * CK_Q4_GROUP_BYTES + k % CK_Q4_BLOCK];
    return (k / CK_Q4_BLOCK) & 1 ? byte >> 4 : byte & 15;
}

void ck_q4_dequantize_rows(const uint8_t *Q, const uint16_t *d, int cols, float *W, int r0, int r1) {
    const int nb = (cols + CK_Q4_BLOCK - 1) / CK_Q4_BLOCK;
    const size_t row_bytes = (size_t)(nb + 1) / 2 * CK_Q4_GROUP_BYTES;
    for (int r = r0; r < r1; r++)
        for (int k = 0; k < cols; k++)
            W[(size_t)r * cols + k] = ck_f16_to_f32(d[(size_t)r * nb + k / CK_Q4_BLOCK]) * (float)(q4_nibble(Q + (size_t)r * row_bytes, k) - 8);
}

static void q4_scalar(const uint8_t *Q, const uint16_t *d, const q4_xq *a, int n, float *y, int ldy, int o0, int o1) {
    const int nb = a->nb;
    const size_t row_bytes = (size_t)(nb + 1) / 2 * CK_Q4_GROUP_BYTES;
    for (int o = o0; o < o1; o++) {
        const uint8_t *q = Q + (size_t)o * row_bytes;
        for (int t = 0; t < n; t++) {
            const int8_t *xq = a->xq + (size_t)t * nb * CK_Q4_BLOCK;
            const float *xd = a->xd + (size_t)t * nb;
            float acc = 0;
            for (int b = 0; b < nb; b++) {
                int32_t dot = 0;
                for (int i = 0; i < CK_Q4_BLOCK; i++) dot += (q4_nibble(q, b * CK_Q4_BLOCK + i) - 8) * xq[b * CK_Q4_BLOCK + i];
                acc += (float)dot * (ck_f16_to_f32(d[(size_t)o * nb + b]) * xd[b]);
            }
            y[(size_t)t * ldy + o] = acc;
        }
    }
}

#if CK_X86
#define CK_INLINE_Q4 static inline __attribute__((always_inline))

/// One weight row against up to CK_Q4_TILE activation rows, which share each group's unpacked
/// nibbles: a 32-byte load, "and 0x0f" for the even block's 32 values and ">> 4, and 0x0f" for
/// the odd one's. Per block and activation row: u8 x s8 pair products (maddubs: at most
/// 2 * 15 * 127, exact in int16), minus xc (the "- 8" of every nibble, exact), pairs summed into
/// int32 (madd with ones), converted, and one FMA with the block's d * xd. Those products are
/// formed for 8 blocks at once (F16C for the 8 scales, one vector multiply) and stored, so each
/// block's scale is a broadcast load: the per-block float work was a third of the kernel's
/// instructions. Four accumulators (blocks b = 0..3 mod 4) hide the FMA latency; per (row,
/// activation row) the operations are those of a one-row call, so no result depends on the tile it
/// fell in. The values stream is prefetched CK_Q4_PREFETCH bytes ahead, as in ck_q8; the scales
/// (2 bytes a block) are left to the hardware prefetcher.
#define CK_Q4_PREFETCH 1024
#define CK_Q4_TILE 3
CK_INLINE_Q4 CK_AVX2 void q4_tile(const uint8_t *q, const uint16_t *d, const q4_xq *a, int t0, const int T,
                                   float *y, int ldy, int o, int prefetch) {
    const int nb = a->nb;
    __m256 acc[CK_Q4_TILE][4];
    const int8_t *xq[CK_Q4_TILE];
    const int16_t *xc[CK_Q4_TILE];
    const float *xd[CK_Q4_TILE];
    _Alignas(32) float sc[CK_Q4_TILE][8];
    for (int t = 0; t < T; t++) {
        xq[t] = a->xq + (size_t)(t0 + t) * nb * CK_Q4_BLOCK;
        xc[t] = a->xc + (size_t)(t0 + t) * nb * 16;
        xd[t] = a->xd + (size_t)(t0 + t) * nb;
        for (int j = 0; j < 4; j++) acc[t][j] = _mm256_setzero_ps();
    }
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
#define CK_Q4_BLOCK_STEP(J, B, W, SCALE)                                                            \
    do {                                                                                            \
        for (int t = 0; t < T; t++) {                                                               \
            const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(W, _mm256_loadu_si256((const __m256i *)(xq[t] + (B) * CK_Q4_BLOCK))), \
                                               _mm256_loadu_si256((const __m256i *)(xc[t] + (B) * 16)));                              \
            acc[t][J] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), SCALE, acc[t][J]);                           \
        }                                                                                           \
    } while (0)
#define CK_Q4_GROUP_STEP(J, B, SCALE_EVEN, SCALE_ODD)                                               \
    do {                                                                                            \
        const __m256i v = _mm256_loadu_si256((const __m256i *)(q + (B) / 2 * CK_Q4_GROUP_BYTES));   \
        const __m256i even = _mm256_and_si256(v, low), odd = _mm256_and_si256(_mm256_srli_epi16(v, 4), low); \
        CK_Q4_BLOCK_STEP(J, B, even, SCALE_EVEN);                                                   \
        if ((B) + 1 < nb) CK_Q4_BLOCK_STEP((J) + 1, (B) + 1, odd, SCALE_ODD);                       \
    } while (0)
    int b = 0;
    for (; b + 8 <= nb; b += 8) {
        if (prefetch) {
            _mm_prefetch((const char *)(q + b / 2 * CK_Q4_GROUP_BYTES) + CK_Q4_PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)(q + b / 2 * CK_Q4_GROUP_BYTES) + CK_Q4_PREFETCH + 64, _MM_HINT_T0);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + b)));
        for (int t = 0; t < T; t++) _mm256_store_ps(sc[t], _mm256_mul_ps(dw, _mm256_loadu_ps(xd[t] + b)));
        CK_Q4_GROUP_STEP(0, b, _mm256_broadcast_ss(&sc[t][0]), _mm256_broadcast_ss(&sc[t][1]));
        CK_Q4_GROUP_STEP(2, b + 2, _mm256_broadcast_ss(&sc[t][2]), _mm256_broadcast_ss(&sc[t][3]));
        CK_Q4_GROUP_STEP(0, b + 4, _mm256_broadcast_ss(&sc[t][4]), _mm256_broadcast_ss(&sc[t][5]));
        CK_Q4_GROUP_STEP(2, b + 6, _mm256_broadcast_ss(&sc[t][6]), _mm256_broadcast_ss(&sc[t][7]));
    }
    // The remaining blocks (fewer than 8): the same products, one group at a time (the scalar
    // multiply rounds as the vector one does).
    for (; b < nb; b += 2)
        CK_Q4_GROUP_STEP(b % 4, b, _mm256_set1_ps(_cvtsh_ss(d[b]) * xd[t][b]), _mm256_set1_ps(_cvtsh_ss(d[b + 1]) * xd[t][b + 1]));
#undef CK_Q4_GROUP_STEP
#undef CK_Q4_BLOCK_STEP
    for (int t = 0; t < T; t++)
        y[(size_t)(t0 + t) * ldy + o] = ck_hsum256(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]), _mm256_add_ps(acc[t][2], acc[t][3])));
}

CK_AVX2 static void q4_avx2(const uint8_t *Q, const uint16_t *d, const q4_xq *a, int n, float *y, int ldy, int o0, int o1) {
    const int nb = a->nb;
    const size_t row_bytes = (size_t)(nb + 1) / 2 * CK_Q4_GROUP_BYTES;
    for (int o = o0; o < o1; o++) {
        const uint8_t *q = Q + (size_t)o * row_bytes;
        const uint16_t *dr = d + (size_t)o * nb;
        int t = 0;
        for (; t + 3 <= n; t += 3) q4_tile(q, dr, a, t, 3, y, ldy, o, t == 0);
        if (n - t == 2) q4_tile(q, dr, a, t, 2, y, ldy, o, t == 0);
        else if (n - t == 1) q4_tile(q, dr, a, t, 1, y, ldy, o, t == 0);
    }
}
#endif

typedef struct {
    const uint8_t *Q; const uint16_t *d; int out; const q4_xq *a; int n; float *y; int ldy;
} q4_task;

static void q4_run(void *ctx, int tid, int nth) {
    const q4_task *t = (const q4_task *)ctx;
    int o0 = (int)((long)t->out * tid / nth), o1 = (int)((long)t->out * (tid + 1) / nth);
    if (o0 >= o1) return;
#if CK_X86
    if (ck_simd_level() > 0) { q4_avx2(t->Q, t->d, t->a, t->n, t->y, t->ldy, o0, o1); return; }
#endif
    q4_scalar(t->Q, t->d, t->a, t->n, t->y, t->ldy, o0, o1);
}

void ck_matmul_q4(const uint8_t *Q, const uint16_t *d, int out, int in, const float *x, int ldx, int n,
                  float *y, int ldy) {
    if (n <= 0 || out <= 0) return;
    // Prefill: the f32 GEMM over dequantised weights (see ck_q4.h).
    if (n > ck_matmul_row_independent_max() && ck_matmul_scaled(CK_Q4, Q, d, out, in, x, ldx, n, y, ldy) == 0)
        return;
    _Alignas(32) char stack[Q4_STACK_BYTES];
    q4_xq a;
    // Quantised once by the calling thread; the pool's threads share it read-only.
    void *heap = q4_activations(x, ldx, n, in, &a, stack);
    q4_task t = {Q, d, out, &a, n, y, ldy};
    ck_parallel(q4_run, &t);
    free(heap);
}
