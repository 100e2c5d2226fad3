// PLACEHOLDER scalar kernels (the kernels helper replaces this file).
#include "ckernels.h"
#include <string.h>

static int g_threads = 1;
int ck_simd_level(void) { return 0; }
const char *ck_simd_name(void) { return "scalar"; }
void ck_force_scalar(int on) { (void)on; }
void ck_set_threads(int n) { g_threads = n; }
int ck_get_threads(void) { return g_threads; }

static inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline float f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0) { if (m == 0) u = s; else { e = 127 - 15 + 1; while (!(m & 0x400)) { m <<= 1; e--; } m &= 0x3ff; u = s | (e << 23) | (m << 13); } }
    else if (e == 31) u = s | 0x7f800000 | (m << 13);
    else u = s | ((e + 127 - 15) << 23) | (m << 13);
    float f; memcpy(&f, &u, 4); return f;
}
static inline float load(ck_dtype dt, const void *W, size_t i) {
    switch (dt) { case CK_F32: return ((const float *)W)[i]; case CK_F16: return f16_to_f32(((const uint16_t *)W)[i]); default: return bf16_to_f32(((const uint16_t *)W)[i]); }
}
void ck_matmul_range(ck_dtype dt, const void *W, int out, int in, const float *x, int ldx, int n, float *y, int ldy, int o0, int o1) {
    (void)out;
    for (int o = o0; o < o1; o++) for (int t = 0; t < n; t++) {
        float acc = 0; for (int k = 0; k < in; k++) acc += load(dt, W, (size_t)o * in + k) * x[(size_t)t * ldx + k];
        y[(size_t)t * ldy + o] = acc;
    }
}
void ck_matmul(ck_dtype dt, const void *W, int out, int in, const float *x, int ldx, int n, float *y, int ldy) {
    ck_matmul_range(dt, W, out, in, x, ldx, n, y, ldy, 0, out);
}
void ck_to_f32(ck_dtype dt, const void *src, float *dst, size_t count) { for (size_t i = 0; i < count; i++) dst[i] = load(dt, src, i); }
void ck_from_f32(ck_dtype dt, const float *src, void *dst, size_t count) {
    for (size_t i = 0; i < count; i++) {
        uint32_t u; memcpy(&u, &src[i], 4);
        if (dt == CK_F32) ((float *)dst)[i] = src[i];
        else if (dt == CK_BF16) { u += 0x7fff + ((u >> 16) & 1); ((uint16_t *)dst)[i] = (uint16_t)(u >> 16); }
        else { ((uint16_t *)dst)[i] = 0; /* placeholder */ }
    }
}
void ck_parallel(void (*fn)(void *ctx, int tid, int nthreads), void *ctx) { fn(ctx, 0, 1); }
