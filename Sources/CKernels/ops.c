// Element-wise kernels and attention. The element-wise ones are a small share of a token's time
// next to the weight reads in ck_matmul, so they are written plainly and left to the compiler to
// vectorise; attention grows with the context (every row reads every cached position), so its dot
// products and accumulations have AVX2 kernels (kern_avx2.c).
#include "ck_internal.h"
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

static void silu_mul_range(float *gate, const float *up, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

typedef struct { float *gate; const float *up; size_t count; } silu_task;
static void silu_run(void *ctx, int tid, int nth) {
    const silu_task *t = (const silu_task *)ctx;
    silu_mul_range(t->gate, t->up, t->count * (size_t)tid / (size_t)nth, t->count * (size_t)(tid + 1) / (size_t)nth);
}

void ck_silu_mul(float *gate, const float *up, size_t count) {
    // One expf per element (3.2 ns on a Zen 4): a multi-row pass's MLP activations (8192 a row) are worth
    // splitting over the pool; each element's arithmetic is the same whoever computes it.
    if (count >= 16384 && ck_get_threads() > 1) {
        silu_task t = {gate, up, count};
        ck_parallel(silu_run, &t);
        return;
    }
    silu_mul_range(gate, up, 0, count);
}

void ck_add(float *y, const float *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] += x[i];
}

// ---- attention (arithmetic stated at ck_attention_rows in ck_ops.h) -------------------------

static void scores_scalar(const float *q, const float *K, size_t stride, int count, int d, float scale, float *s) {
    for (int t = 0; t < count; t++) {
        const float *k = K + (size_t)t * stride;
        float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < d; i++) l[i & 7] += q[i] * k[i];
        s[t] = (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) * scale;
    }
}

static void accumulate_scalar(const float *e, const float *V, size_t stride, int count, int d, float *acc) {
    for (int t = 0; t < count; t++) {
        const float *v = V + (size_t)t * stride;
        for (int i = 0; i < d; i++) acc[i] += e[t] * v[i];
    }
}

static void attention_head(const float *q, const float *K, const float *V, size_t stride, int len, int d, int vector,
                           float *out) {
    const float scale = 1.0f / sqrtf((float)d);
    float s[CK_ATTENTION_CHUNK];
    float m = -INFINITY, l = 0;
    memset(out, 0, sizeof(float) * (size_t)d);
    for (int t0 = 0; t0 < len; t0 += CK_ATTENTION_CHUNK) {
        const int count = len - t0 < CK_ATTENTION_CHUNK ? len - t0 : CK_ATTENTION_CHUNK;
        const float *Kc = K + (size_t)t0 * stride, *Vc = V + (size_t)t0 * stride;
        if (vector) ck_avx2_attention_scores(q, Kc, stride, count, d, scale, s);
        else scores_scalar(q, Kc, stride, count, d, scale, s);
        float mc = m;
        for (int t = 0; t < count; t++) if (s[t] > mc) mc = s[t];
        if (mc > m) {
            if (m != -INFINITY) {
                const float f = expf(m - mc);
                l *= f;
                for (int i = 0; i < d; i++) out[i] *= f;
            }
            m = mc;
        }
        for (int t = 0; t < count; t++) { s[t] = expf(s[t] - m); l += s[t]; }
        if (vector) ck_avx2_attention_accumulate(s, Vc, stride, count, d, out);
        else accumulate_scalar(s, Vc, stride, count, d, out);
    }
    const float inv = 1.0f / l;
    for (int i = 0; i < d; i++) out[i] *= inv;
}

typedef struct {
    const ck_attention_row *rows;
    int n, heads, group, d, stride, vector;
    long total; // work units: heads * sum of len
} attention_ctx;

// Thread tid takes the (row, head) pairs whose work starts in its share [tid, tid+1) * total / nth:
// contiguous, balanced by positions, and which pair goes where never changes a result.
static void attention_task(void *c, int tid, int nth) {
    const attention_ctx *a = c;
    const long lo = a->total * tid / nth, hi = a->total * (tid + 1) / nth;
    long at = 0;
    for (int r = 0; r < a->n && at < hi; r++) {
        const ck_attention_row *row = &a->rows[r];
        for (int h = 0; h < a->heads && at < hi; h++, at += row->len) {
            if (at < lo) continue;
            const size_t kv = (size_t)(h / a->group) * a->d;
            attention_head(row->q + (size_t)h * a->d, row->K + kv, row->V + kv, (size_t)a->stride, row->len, a->d,
                           a->vector, row->out + (size_t)h * a->d);
        }
    }
}

void ck_attention_rows(const ck_attention_row *rows, int n, int heads, int kvHeads, int headDim, int kvStride) {
    attention_ctx a = {rows, n, heads, heads / kvHeads, headDim, kvStride,
                       ck_simd_level() >= 1 && headDim % 8 == 0, 0};
    for (int r = 0; r < n; r++) a.total += (long)heads * rows[r].len;
    // Below ~4k position-heads (tens of microseconds) waking the pool costs more than it saves.
    if (a.total < 4096) attention_task(&a, 0, 1);
    else ck_parallel(attention_task, &a);
}

static int argmax_scalar(const float *x, int count) {
    int best = 0;
    for (int i = 1; i < count; i++) if (x[i] > x[best]) best = i;
    return best;
}

#if CK_X86
/// The scalar loop's answer in two vector passes: the largest value not NaN (x[0] seeds every lane,
/// and vmaxps returns its second operand, the running maximum, when the first is NaN; order is free
/// since max is exact), then the first index holding a value equal to it (-0 equals +0, as the
/// scalar `>` never moves between them). A NaN x[0] stays the maximum and equals nothing: 0, as in
/// the scalar loop. (The scalar loop took 432 us per 128k-logit row of every draft and
/// verification, single-threaded while the other thread waited; this takes 11.6 on a Zen 4.)
CK_AVX2 static int argmax_avx2(const float *x, int count) {
    __m256 m0 = _mm256_set1_ps(x[0]), m1 = m0, m2 = m0, m3 = m0;
    int i = 0;
    for (; i + 32 <= count; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    for (; i + 8 <= count; i += 8) m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    float best = ck_hmax256(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
    for (; i < count; i++) if (x[i] > best) best = x[i];
    const __m256 b = _mm256_set1_ps(best);
    for (i = 0; i + 8 <= count; i += 8) {
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), b, _CMP_EQ_OQ));
        if (mask) return i + __builtin_ctz((unsigned)mask);
    }
    for (; i < count; i++) if (x[i] == best) return i;
    return 0;
}
#endif

int ck_argmax(const float *x, int count) {
#if CK_X86
    if (count >= 32 && ck_simd_level() > 0) return argmax_avx2(x, count);
#endif
    return argmax_scalar(x, count);
}
