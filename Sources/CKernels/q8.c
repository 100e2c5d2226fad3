// int8 weight kernels (see ck_q8.h): per-row symmetric scales, f32 activations and accumulation.
#include "ck_q8.h"
#include <math.h>
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
    if (!row) return;
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

static void q8_scalar(const int8_t *Q, const float *scales, int in, const float *x, int ldx, int n,
                      float *y, int ldy, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const int8_t *q = Q + (size_t)o * in;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * ldx;
            float acc = 0;
            for (int k = 0; k < in; k++) acc += xt[k] * (float)q[k];
            y[(size_t)t * ldy + o] = acc * scales[o];
        }
    }
}

#if Q8_X86
__attribute__((target("avx2,fma"))) static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static inline __m256 widen8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/// Tiles of four rows: each 8-wide int8 chunk is widened to f32 in registers, two accumulators per
/// row (16 k per step) hide the FMA latency, and every activation row of x reuses the tile from L1,
/// so the weights stream from memory once at one byte per weight whatever n is. While a tile is
/// summed, the next tile's rows are prefetched line by line: every 2-4 KiB row is a new stream
/// that the hardware prefetchers would only pick up after several demand misses (measured on a
/// 2-core Zen 3: 24-27 GB/s with it against 18-20 GB/s without).
__attribute__((target("avx2,fma"))) static void q8_avx2(const int8_t *Q, const float *scales, int in, const float *x,
                                                         int ldx, int n, float *y, int ldy, int o0, int o1) {
    const int k16 = in & ~15;
    const size_t tile = (size_t)4 * in;
    int o = o0;
    for (; o + 4 <= o1; o += 4) {
        const int8_t *q0 = Q + (size_t)o * in, *q1 = q0 + in, *q2 = q1 + in, *q3 = q2 + in;
        const int prefetch = o + 8 <= o1;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int k = 0; k < k16; k += 16) {
                if (t == 0 && prefetch && (k & 63) == 0) {
                    const char *p = (const char *)(q0 + tile + k);
                    _mm_prefetch(p, _MM_HINT_T0);
                    _mm_prefetch(p + in, _MM_HINT_T0);
                    _mm_prefetch(p + 2 * (size_t)in, _MM_HINT_T0);
                    _mm_prefetch(p + 3 * (size_t)in, _MM_HINT_T0);
                }
                __m256 x0 = _mm256_loadu_ps(xt + k), x1 = _mm256_loadu_ps(xt + k + 8);
                a0 = _mm256_fmadd_ps(widen8(q0 + k), x0, a0);
                b0 = _mm256_fmadd_ps(widen8(q0 + k + 8), x1, b0);
                a1 = _mm256_fmadd_ps(widen8(q1 + k), x0, a1);
                b1 = _mm256_fmadd_ps(widen8(q1 + k + 8), x1, b1);
                a2 = _mm256_fmadd_ps(widen8(q2 + k), x0, a2);
                b2 = _mm256_fmadd_ps(widen8(q2 + k + 8), x1, b2);
                a3 = _mm256_fmadd_ps(widen8(q3 + k), x0, a3);
                b3 = _mm256_fmadd_ps(widen8(q3 + k + 8), x1, b3);
            }
            float s0 = hsum(_mm256_add_ps(a0, b0)), s1 = hsum(_mm256_add_ps(a1, b1));
            float s2 = hsum(_mm256_add_ps(a2, b2)), s3 = hsum(_mm256_add_ps(a3, b3));
            for (int k = k16; k < in; k++) {
                s0 += xt[k] * q0[k]; s1 += xt[k] * q1[k]; s2 += xt[k] * q2[k]; s3 += xt[k] * q3[k];
            }
            float *yt = y + (size_t)t * ldy;
            yt[o] = s0 * scales[o]; yt[o + 1] = s1 * scales[o + 1]; yt[o + 2] = s2 * scales[o + 2]; yt[o + 3] = s3 * scales[o + 3];
        }
    }
    if (o < o1) q8_scalar(Q, scales, in, x, ldx, n, y, ldy, o, o1);
}
#endif

void ck_matmul_q8_range(const int8_t *Q, const float *scales, int in, const float *x, int ldx, int n,
                        float *y, int ldy, int o0, int o1) {
#if Q8_X86
    if (ck_simd_level() > 0) { q8_avx2(Q, scales, in, x, ldx, n, y, ldy, o0, o1); return; }
#endif
    q8_scalar(Q, scales, in, x, ldx, n, y, ldy, o0, o1);
}

typedef struct {
    const int8_t *Q; const float *scales; int out, in; const float *x; int ldx, n; float *y; int ldy;
} q8_task;

static void q8_run(void *ctx, int tid, int nth) {
    const q8_task *t = (const q8_task *)ctx;
    // Chunks of whole 4-row groups so every thread runs the vector kernel.
    int groups = (t->out + 3) / 4;
    int g0 = (int)((long)groups * tid / nth), g1 = (int)((long)groups * (tid + 1) / nth);
    int o0 = g0 * 4, o1 = g1 * 4 < t->out ? g1 * 4 : t->out;
    if (o0 < o1) ck_matmul_q8_range(t->Q, t->scales, t->in, t->x, t->ldx, t->n, t->y, t->ldy, o0, o1);
}

void ck_matmul_q8(const int8_t *Q, const float *scales, int out, int in, const float *x, int ldx, int n,
                  float *y, int ldy) {
    q8_task t = {Q, scales, out, in, x, ldx, n, y, ldy};
    ck_parallel(q8_run, &t);
}
