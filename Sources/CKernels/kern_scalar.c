// Portable scalar kernels: the reference fallback for CPUs without AVX2/FMA/F16C (and the path
// ck_force_scalar selects). No allocation: weights are widened in small stack chunks.
#include "ck_internal.h"

#define CK_SCALAR_CHUNK 256

static float dot_f32(const float *a, const float *b, int len) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < len; i++) s[i & 7] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void ck_scalar_range(ck_dtype dt, const void *W, int in, const float *x, int ldx, int n,
                     float *y, int ldy, int o0, int o1) {
    float wbuf[CK_SCALAR_CHUNK];
    const size_t es = ck_dt_size(dt);
    for (int o = o0; o < o1; o++) {
        const char *wrow = (const char *)W + (size_t)o * in * es;
        for (int t = 0; t < n; t++) y[(size_t)t * ldy + o] = 0.0f;
        for (int kb = 0; kb < in; kb += CK_SCALAR_CHUNK) {
            int kl = in - kb < CK_SCALAR_CHUNK ? in - kb : CK_SCALAR_CHUNK;
            for (int k = 0; k < kl; k++) wbuf[k] = ck_load_elem(dt, wrow, (size_t)kb + k);
            for (int t = 0; t < n; t++)
                y[(size_t)t * ldy + o] += dot_f32(wbuf, x + (size_t)t * ldx + kb, kl);
        }
    }
}
