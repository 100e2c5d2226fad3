#include "ct_kernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

// Each kernel body is compiled twice: for AVX2+FMA and for the baseline, picked once per call by
// a cached CPU check (target_clones' "arch=" dispatch matches CPU models, not features, and
// would leave AMD CPUs on the baseline).
#if defined(__x86_64__)
#define CT_FAST __attribute__((target("avx2,fma")))
static int ct_has_avx2_fma(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}
#else
#define CT_FAST
static int ct_has_avx2_fma(void) { return 0; }
#endif

#define CT_DISPATCH(ret, name, params, args) \
    static CT_FAST ret name##_fast params { return name##_body args; } \
    static ret name##_base params { return name##_body args; } \
    ret name params { return ct_has_avx2_fma() ? name##_fast args : name##_base args; }

// exp(x) for x ≤ 0-ish ranges used here: 2^n · p(r) with r = x − n·ln2 ∈ [−ln2/2, ln2/2] and a
// degree-6 polynomial (relative error ≈ 2e-7, below f32 rounding of the sums it feeds).
// Branch-free so that loops calling it vectorise.
static inline __attribute__((always_inline)) float ct_expf(float x) {
    x = fminf(fmaxf(x, -87.0f), 88.0f);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666418f + r * (0.00833343994f + r * 0.00138873165f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline __attribute__((always_inline)) float ct_softmax_body(float *x, size_t n, float scale) {
    float mx = x[0];
    for (size_t i = 1; i < n; i++) mx = fmaxf(mx, x[i]);
    float sum = 0;
    for (size_t i = 0; i < n; i++) {
        float e = ct_expf(x[i] - mx);
        x[i] = e;
        sum += e;
    }
    float inv = scale / sum;
    for (size_t i = 0; i < n; i++) x[i] *= inv;
    return mx + logf(sum);
}

static inline __attribute__((always_inline)) void ct_swiglu_forward_body(const float *gate, const float *up, float *act, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + ct_expf(-g)) * up[i];
    }
}

static inline __attribute__((always_inline)) void ct_swiglu_backward_body(const float *gate, const float *up, const float *dAct, float *dGate, float *dUp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + ct_expf(-g));
        float d = dAct[i];
        dGate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
        dUp[i] = d * g * s;
    }
}

CT_DISPATCH(float, ct_softmax, (float *x, size_t n, float scale), (x, n, scale))
CT_DISPATCH(void, ct_swiglu_forward, (const float *gate, const float *up, float *act, size_t n), (gate, up, act, n))
CT_DISPATCH(void, ct_swiglu_backward, (const float *gate, const float *up, const float *dAct, float *dGate, float *dUp, size_t n),
            (gate, up, dAct, dGate, dUp, n))
