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

/// Four rows at a time for one activation row: each 8-wide int8 chunk is widened to f32 in
/// registers, so the weights stream from memory exactly once at one byte per weight.
__attribute__((target("avx2,fma"))) static void q8_avx2(const int8_t *Q, const float *scales, int in, const float *x,
                                                         int ldx, int n, float *y, int ldy, int o0, int o1) {
    int k8 = in & ~7;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
            const int8_t *q0 = Q + (size_t)o * in, *q1 = q0 + in, *q2 = q1 + in, *q3 = q2 + in;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int k = 0; k < k8; k += 8) {
                __m256 xv = _mm256_loadu_ps(xt + k);
                __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q0 + k))));
                __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q1 + k))));
                __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q2 + k))));
                __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q3 + k))));
                a0 = _mm256_fmadd_ps(w0, xv, a0);
                a1 = _mm256_fmadd_ps(w1, xv, a1);
                a2 = _mm256_fmadd_ps(w2, xv, a2);
                a3 = _mm256_fmadd_ps(w3, xv, a3);
            }
            float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
            for (int k = k8; k < in; k++) {
                s0 += xt[k] * q0[k]; s1 += xt[k] * q1[k]; s2 += xt[k] * q2[k]; s3 += xt[k] * q3[k];
            }
            float *yt = y + (size_t)t * ldy;
            yt[o] = s0 * scales[o]; yt[o + 1] = s1 * scales[o + 1]; yt[o + 2] = s2 * scales[o + 2]; yt[o + 3] = s3 * scales[o + 3];
        }
        if (o < o1) q8_scalar(Q, scales, in, xt, ldx, 1, y + (size_t)t * ldy, ldy, o, o1);
    }
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
