// Element-wise kernels and attention. These are a small share of a token's time next to the
// weight reads in ck_matmul, so they are written plainly and left to the compiler to vectorise.
#include "ck_ops.h"
#include <math.h>
#include <string.h>

static inline float weight_at(const void *w, ck_dtype dt, int i) {
    float f;
    ck_to_f32(dt, (const char *)w + (size_t)i * (dt == CK_F32 ? 4 : 2), &f, 1);
    return f;
}

void ck_rmsnorm(const float *x, const void *weight, ck_dtype wdt, float eps, int dim, int n, float *out) {
    // Norm weights are tiny; widening them per call keeps the loop branch-free for the compiler.
    float wbuf[1024];
    const float *w = NULL;
    if (wdt == CK_F32) w = (const float *)weight;
    else if (dim <= 1024) { ck_to_f32(wdt, weight, wbuf, (size_t)dim); w = wbuf; }
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * dim;
        float *o = out + (size_t)r * dim;
        double ss = 0;  // f64 sum: the mean of squares is the one reduction where f32 drifts
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        if (w) for (int i = 0; i < dim; i++) o[i] = (xr[i] * scale) * w[i];
        else for (int i = 0; i < dim; i++) o[i] = (xr[i] * scale) * weight_at(weight, wdt, i);
    }
}

void ck_rope(float *v, int heads, int headDim, const float *cos, const float *sin) {
    int half = headDim / 2;
    for (int h = 0; h < heads; h++) {
        float *x = v + (size_t)h * headDim;
        for (int i = 0; i < half; i++) {
            float a = x[i], b = x[i + half];
            x[i] = a * cos[i] - b * sin[i];
            x[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

void ck_silu_mul(float *gate, const float *up, size_t count) {
    for (size_t i = 0; i < count; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void ck_add(float *y, const float *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] += x[i];
}

void ck_attention(const float *q, int heads, int kvHeads, int headDim,
                  const float *K, const float *V, int kvStride, int len,
                  float *out, float *scratch) {
    int group = heads / kvHeads;
    float scale = 1.0f / sqrtf((float)headDim);
    for (int h = 0; h < heads; h++) {
        const float *qh = q + (size_t)h * headDim;
        int g = h / group;
        float maxScore = -INFINITY;
        for (int t = 0; t < len; t++) {
            const float *k = K + (size_t)t * kvStride + (size_t)g * headDim;
            float s = 0;
            for (int i = 0; i < headDim; i++) s += qh[i] * k[i];
            s *= scale;
            scratch[t] = s;
            if (s > maxScore) maxScore = s;
        }
        float sum = 0;
        for (int t = 0; t < len; t++) { float e = expf(scratch[t] - maxScore); scratch[t] = e; sum += e; }
        float inv = 1.0f / sum;
        float *o = out + (size_t)h * headDim;
        memset(o, 0, sizeof(float) * (size_t)headDim);
        for (int t = 0; t < len; t++) {
            const float *vv = V + (size_t)t * kvStride + (size_t)g * headDim;
            float p = scratch[t] * inv;
            for (int i = 0; i < headDim; i++) o[i] += p * vv[i];
        }
    }
}

int ck_argmax(const float *x, int count) {
    int best = 0;
    for (int i = 1; i < count; i++) if (x[i] > x[best]) best = i;
    return best;
}
