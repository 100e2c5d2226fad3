// Public entry points of CKernels: CPU dispatch, threading of ck_matmul, conversions.
#include "ck_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

// ---- CPU features --------------------------------------------------------------------------

static _Atomic int g_cpu_level = -1; // detected level
static _Atomic int g_force_scalar;
static _Atomic int g_force_avx2;
static _Atomic int g_bf16_asked = -1; // -1: not yet read from CK_BF16_ACTIVATIONS
static _Atomic int g_cpu_bf16 = -1;

static int detect_level(void) {
    int v = atomic_load_explicit(&g_cpu_level, memory_order_relaxed);
    if (v < 0) {
        v = 0;
#if CK_X86
        __builtin_cpu_init();
        // __builtin_cpu_supports reports AVX features only when the OS saves the YMM state.
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
            v = 1;
        // AVX-512 by default only where it was measured to pay: AMD (Zen 4 and later, the only
        // AMD cores with it). Intel cores may lower their clock for 512-bit FMAs, which a
        // memory-bound decode would pay for everywhere else: CK_AVX512=1 opts in, CK_AVX512=0 out.
        const char *a = getenv("CK_AVX512");
        int want512 = a && *a ? *a != '0' : __builtin_cpu_is("amd");
        if (v == 1 && want512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
            v = 2;
#endif
        const char *e = getenv("CK_FORCE_SCALAR");
        if (e && *e && *e != '0') v = 0;
        // Benchmarks while tuning: CK_TUNE=key=value,key=value (see ck_kernels_tune).
        const char *t = getenv("CK_TUNE");
        while (t && *t) {
            char key[32];
            int value, used = 0;
            if (sscanf(t, "%31[a-z0-9_]=%d%n", key, &value, &used) != 2) break;
            ck_kernels_tune(key, value);
            t += used;
            if (*t == ',') t++;
        }
        atomic_store_explicit(&g_cpu_level, v, memory_order_relaxed);
    }
    return v;
}

int ck_simd_level(void) {
    if (atomic_load_explicit(&g_force_scalar, memory_order_relaxed)) return 0;
    int v = detect_level();
    return v > 1 && atomic_load_explicit(&g_force_avx2, memory_order_relaxed) ? 1 : v;
}
const char *ck_simd_name(void) {
    static const char *names[] = {"scalar", "avx2-fma-f16c", "avx512-avx2-fma-f16c"};
    return ck_bf16_activations() ? "avx512-bf16-activations-avx2-fma-f16c" : names[ck_simd_level()];
}

int ck_bf16_activations_available(void) {
    if (ck_simd_level() < 2) return 0;
    int cpu = atomic_load_explicit(&g_cpu_bf16, memory_order_relaxed);
    if (cpu < 0) {
#if CK_X86
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avx512bf16");
#else
        cpu = 0;
#endif
        atomic_store(&g_cpu_bf16, cpu);
    }
    return cpu;
}

int ck_bf16_activations(void) {
    int asked = atomic_load_explicit(&g_bf16_asked, memory_order_relaxed);
    if (asked < 0) {
        const char *e = getenv("CK_BF16_ACTIVATIONS");
        asked = e && *e && *e != '0';
        atomic_store(&g_bf16_asked, asked);
    }
    return asked && ck_bf16_activations_available();
}

int ck_set_bf16_activations(int on) {
    atomic_store(&g_bf16_asked, on ? 1 : 0);
    return ck_bf16_activations();
}
void ck_force_scalar(int on) { atomic_store(&g_force_scalar, on ? 1 : 0); }
void ck_force_avx2(int on) { atomic_store(&g_force_avx2, on ? 1 : 0); }

// ---- scratch -------------------------------------------------------------------------------

float *ck_buf_reserve(ck_buf *b, size_t count) {
    if (b->cap >= count && b->p) return b->p;
    size_t cap = count + count / 4 + 1024;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap * sizeof(float)) != 0) return NULL;
    free(b->p);
    b->p = p;
    b->cap = cap;
    return b->p;
}

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local ck_scratch *t_scratch;

static void scratch_free(void *p) {
    ck_scratch *s = p;
    free(s->wc.p);
    free(s->cs.p);
    free(s->xprep.p);
    free(s);
}
static void scratch_key_init(void) { pthread_key_create(&g_scratch_key, scratch_free); }

ck_scratch *ck_tls_scratch(void) {
    if (t_scratch) return t_scratch;
    pthread_once(&g_scratch_once, scratch_key_init);
    ck_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_setspecific(g_scratch_key, s);
    t_scratch = s;
    return s;
}

// Activations prepared by ck_matmul, shared by its tasks (guarded by g_prep_mu).
static pthread_mutex_t g_prep_mu = PTHREAD_MUTEX_INITIALIZER;
static ck_buf g_prep;

// ---- matrix products -----------------------------------------------------------------------

static void zero_rows(float *y, int ldy, int n, int o0, int o1) {
    for (int t = 0; t < n; t++) memset(y + (size_t)t * ldy + o0, 0, (size_t)(o1 - o0) * sizeof(float));
}

void ck_matmul_range(ck_dtype dt, const void *W, int out, int in, const float *x, int ldx, int n,
                     float *y, int ldy, int o0, int o1) {
    if (o0 < 0) o0 = 0;
    if (o1 > out) o1 = out;
    if (n <= 0 || o0 >= o1) return;
    if (in <= 0) { zero_rows(y, ldy, n, o0, o1); return; }
    if (ck_simd_level()) {
        ck_scratch *s = ck_tls_scratch();
        size_t need = ck_avx2_prep_floats(dt, in, n);
        float *buf = NULL;
        if (s && (need == 0 || (buf = ck_buf_reserve(&s->xprep, need)))) {
            ck_xprep px;
            ck_avx2_prepare(dt, in, x, ldx, n, buf, &px);
            if (!px.small) ck_avx2_pack_groups(in, x, ldx, n, buf, 0, (n + 15) / 16);
            if (ck_avx2_range(dt, W, in, x, ldx, &px, n, y, ldy, o0, o1, s) == 0) return;
        }
    }
    ck_scalar_range(dt, W, in, x, ldx, n, y, ldy, o0, o1);
}

typedef struct {
    ck_dtype dt;
    const void *W;
    int out, in;
    const float *x;
    int ldx, n;
    float *y;
    int ldy;
    int simd;
    ck_xprep px;
    _Atomic int failed; // quantised dtypes: a task could not get its scratch (no scalar fallback here)
} mm_job;

static void split_rows(int out, int tid, int nth, int *a, int *b) {
    int units = (out + CK_ROW_ALIGN - 1) / CK_ROW_ALIGN;
    int per = units / nth, rem = units % nth;
    int u0 = tid * per + (tid < rem ? tid : rem);
    int u1 = u0 + per + (tid < rem ? 1 : 0);
    *a = u0 * CK_ROW_ALIGN < out ? u0 * CK_ROW_ALIGN : out;
    *b = u1 * CK_ROW_ALIGN < out ? u1 * CK_ROW_ALIGN : out;
}

static void mm_task(void *ctx, int tid, int nth) {
    mm_job *j = ctx;
    int o0, o1;
    split_rows(j->out, tid, nth, &o0, &o1);
    if (o0 >= o1) return;
    if (j->simd) {
        ck_scratch *s = ck_tls_scratch();
        if (s && ck_avx2_range(j->dt, j->W, j->in, j->x, j->ldx, &j->px, j->n, j->y, j->ldy, o0, o1, s) == 0)
            return;
    }
    if (ck_dt_quantized(j->dt)) { atomic_store(&j->failed, 1); return; }
    ck_scalar_range(j->dt, j->W, j->in, j->x, j->ldx, j->n, j->y, j->ldy, o0, o1);
}

static void pack_task(void *ctx, int tid, int nth) {
    mm_job *j = ctx;
    int groups = (j->n + 15) / 16;
    int g0 = (int)((long)groups * tid / nth), g1 = (int)((long)groups * (tid + 1) / nth);
    ck_avx2_pack_groups(j->in, j->x, j->ldx, j->n, (float *)j->px.xp, g0, g1);
}

// Below this many weight elements a call runs on the calling thread only.
#define CK_PAR_MIN_ELEMS 32768

void ck_matmul(ck_dtype dt, const void *W, int out, int in, const float *x, int ldx, int n,
               float *y, int ldy) {
    (void)ck_matmul_scaled(dt, W, NULL, out, in, x, ldx, n, y, ldy);
}

int ck_matmul_scaled(ck_dtype dt, const void *W, const void *scales, int out, int in, const float *x, int ldx,
                     int n, float *y, int ldy) {
    if (n <= 0 || out <= 0) return 0;
    if (in <= 0) { zero_rows(y, ldy, n, 0, out); return 0; }
    if (ck_dt_quantized(dt) && !ck_simd_level()) return -1;
    // bf16 activations: a call of more rows than the small path takes is cut into calls of it, so
    // a prefill row is computed exactly as a decode row (vdpbf16ps) and no f32 GEMM is needed.
    // Measured on a 2-core Zen 4: a 40-token prefill of the 1B stand-in 98-102 tokens/s on the
    // small path against 54 on the f32 GEMM; its weights are read once per chunk of rows.
    const int chunk = ck_avx2_small_nmax();
    if (dt == CK_BF16 && n > chunk && chunk >= 1 && ck_bf16_activations()) {
        for (int t = 0; t < n; t += chunk) {
            const int m = n - t < chunk ? n - t : chunk;
            const int r = ck_matmul_scaled(dt, W, scales, out, in, x + (size_t)t * ldx, ldx, m, y + (size_t)t * ldy, ldy);
            if (r) return r;
        }
        return 0;
    }
    int nth = ck_pool_threads();
    int max_chunks = (out + CK_ROW_ALIGN - 1) / CK_ROW_ALIGN;
    if ((size_t)out * (size_t)in < CK_PAR_MIN_ELEMS) nth = 1;
    if (nth > max_chunks) nth = max_chunks;
    if (nth <= 1 || ck_pool_in_task()) {
        if (!ck_dt_quantized(dt)) { ck_matmul_range(dt, W, out, in, x, ldx, n, y, ldy, 0, out); return 0; }
        nth = 1; // quantised: the job below runs on this thread alone
    }
    mm_job j = {dt, W, out, in, x, ldx, n, y, ldy, 0, {0}, 0};
    int locked = 0;
    if (ck_simd_level()) {
        size_t need = ck_avx2_prep_floats(dt, in, n);
        float *buf = NULL;
        if (need == 0) {
            j.simd = 1;
        } else {
            pthread_mutex_lock(&g_prep_mu);
            locked = 1;
            if ((buf = ck_buf_reserve(&g_prep, need))) j.simd = 1;
        }
        if (j.simd) {
            ck_avx2_prepare(dt, in, x, ldx, n, buf, &j.px);
            j.px.scales = scales;
            if (!j.px.small) { if (nth <= 1) pack_task(&j, 0, 1); else ck_pool_run(pack_task, &j, nth); }
        }
    }
    if (ck_dt_quantized(dt) && !j.simd) {
        if (locked) pthread_mutex_unlock(&g_prep_mu);
        return -1;
    }
    if (nth <= 1) mm_task(&j, 0, 1); else ck_pool_run(mm_task, &j, nth);
    if (locked) pthread_mutex_unlock(&g_prep_mu);
    return atomic_load(&j.failed) ? -1 : 0;
}

int ck_matmul_row_independent_max(void) { return ck_simd_level() ? ck_avx2_small_nmax() : 1 << 30; }

// ---- conversions ---------------------------------------------------------------------------

void ck_to_f32(ck_dtype dt, const void *src, float *dst, size_t count) {
    if (ck_simd_level()) { ck_avx2_to_f32(dt, src, dst, count); return; }
    if (dt == CK_F32) { memmove(dst, src, count * 4); return; }
    for (size_t i = 0; i < count; i++) dst[i] = ck_load_elem(dt, src, i);
}

void ck_from_f32(ck_dtype dt, const float *src, void *dst, size_t count) {
    if (ck_simd_level()) { ck_avx2_from_f32(dt, src, dst, count); return; }
    if (dt == CK_F32) { memmove(dst, src, count * 4); return; }
    uint16_t *d = dst;
    if (dt == CK_BF16)
        for (size_t i = 0; i < count; i++) d[i] = ck_f32_to_bf16(src[i]);
    else
        for (size_t i = 0; i < count; i++) d[i] = ck_f32_to_f16(src[i]);
}
