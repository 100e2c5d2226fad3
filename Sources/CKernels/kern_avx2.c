// AVX2 + FMA + F16C kernels. Every function that executes those instructions carries CK_AVX2;
// they are only reached after run-time detection (see matmul.c).
//
// Two algorithms:
//  * n <= 40 (decode, speculative verification): dot-product tiles of T <= 4 tokens x R weight rows,
//    vectorised along k, weights widened to f32 in registers straight from their stored dtype
//    (bf16: a 16-bit shift / mask, with the activations staged in the matching even/odd order;
//    f16: vcvtph2ps), one horizontal reduction per tile. A row tile is read from memory once and
//    reused from cache by every token group right away, so a pass over n rows of x costs about one
//    read of the weights. Software prefetch runs ahead along the rows and into the next tile (the
//    hardware prefetchers stop at 4 KiB pages, and every weight row is a new stream).
//  * larger n (prefill): blocks of W (96 rows x 256 k) are widened to f32 into a per-thread buffer,
//    activations are packed once per call as [group of 16 tokens][k][16], and a 16x6 register-tiled
//    FMA microkernel (8x12 for a last group of <= 8 tokens) accumulates into per-thread tiles.
#include "ck_internal.h"

#if CK_X86
#include <immintrin.h>

// ============================================================================================
// Small-n dot-product kernels
// ============================================================================================

// 16 consecutive weights of one row as two f32 vectors. For bf16 the pair is (even elements, odd
// elements): the 16-bit shift / mask widen without shuffles, and the activations are staged in the
// same even/odd order. For f16 / f32 the order is natural (elements 0-7, 8-15).
CK_INLINE CK_AVX2 __m256 w_lo(int dt, const void *w, size_t k) {
    if (dt == CK_BF16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    } else if (dt == CK_F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
    }
    return _mm256_loadu_ps((const float *)w + k);
}
CK_INLINE CK_AVX2 __m256 w_hi(int dt, const void *w, size_t k) {
    if (dt == CK_BF16) {
        // Hide from the compiler that this re-reads w_lo's 32 bytes: re-loading (folded into the
        // vpand) is cheaper than keeping R loaded vectors alive, which spills.
        __asm__("" : "+r"(w));
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
        return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
    } else if (dt == CK_F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k + 8)));
    }
    return _mm256_loadu_ps((const float *)w + k + 8);
}

CK_INLINE CK_AVX2 const void *w_row(int dt, const void *W, size_t in, int o) {
    return (const char *)W + (size_t)o * in * ck_dt_size((ck_dtype)dt);
}

// Sum of the 8 lanes of each of a, b, c, d -> {sa, sb, sc, sd}.
CK_INLINE CK_AVX2 __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    __m256 s = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// ---- tuning (measured on a 2-core Zen 3 with 20-30 GB/s of DRAM bandwidth) -------------------
#define CK_SMALL_GROUPS_MAX 16
static int g_small_nmax = 40;  // largest n that uses the dot-product kernels (<= 4*CK_SMALL_GROUPS_MAX)
static int g_r1 = 4;           // rows per tile for n == 1
static int g_pf = 1;           // software prefetch on/off
static int g_pfd = 1024;       // prefetch distance along a row (bytes)
static int g_rb = 48;          // rows per block when k is blocked (multiple of 12)
static int g_xbytes = 1 << 20; // activation bytes (all tokens) above which k is blocked

void ck_kernels_tune(const char *key, int value) {
    if (!strcmp(key, "small_nmax") && value >= 0 && value <= 4 * CK_SMALL_GROUPS_MAX) g_small_nmax = value;
    else if (!strcmp(key, "r1") && value >= 1 && value <= 8) g_r1 = value;
    else if (!strcmp(key, "pf")) g_pf = value != 0;
    else if (!strcmp(key, "pfd") && value >= 64) g_pfd = value;
    else if (!strcmp(key, "rb") && value >= 12) g_rb = value / 12 * 12;
    else if (!strcmp(key, "xbytes") && value >= 4096) g_xbytes = value;
    else if (!ck_q8_tune(key, value)) ck_avx512_tune(key, value);
}
int ck_avx2_use_small(int n) { return n <= g_small_nmax; }
int ck_avx2_small_nmax(void) { return g_small_nmax; }

#define CK_PF_HINT _MM_HINT_T0

// Tile of T tokens x R rows over k in [k0, k16) (whole 16-blocks), then, if `last`, the scalar tail
// [k16, k1). xs: activations (see xld below) in the element order of w_lo/w_hi (the tail in natural
// order). The T*R vector accumulators start at zero (`first`) or from vacc, and are either saved to
// vacc (not `last`) or reduced and stored to y[t*ldy + o + r] (`last`).
// pf_off != 0: software prefetch g_pfd bytes ahead along each row, continuing into the next tile's
// rows (which start pf_off bytes after this tile's) near the end of the range; one cache line per
// row per 32 elements. The hardware prefetchers stop at 4 KiB pages and every weight row is a new
// stream, so without this the first lines of every row are demand misses.
// SAVE (f16 only): also store the widened weights to ws[r*in + k], for the following groups.
CK_INLINE CK_AVX2 void dot_tile(int dt, int T, int R, int SAVE, const void *W, size_t in, int o,
                                const float *xs, size_t xld, size_t k0, size_t k16, size_t k1,
                                float *vacc, int first, int last, float *y, size_t ldy,
                                ptrdiff_t pf_off, float *ws) {
    __m256 acc[4][8];
    const void *wr[8];
    const float *xt[4];
    for (int r = 0; r < R; r++) wr[r] = w_row(dt, W, in, o + r);
    // xld != 0: token t at xs + t*xld. xld == 0: the group's tokens interleaved per 16-block,
    // element (t, k) at xs + (k & ~15)*T + 16*t + (k & 15), so a pass reads one sequential stream.
    const size_t km = xld ? 1 : (size_t)T;
    for (int t = 0; t < T; t++) xt[t] = xs + (size_t)t * (xld ? xld : 16);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++)
            acc[t][r] = first ? _mm256_setzero_ps() : _mm256_load_ps(vacc + (t * R + r) * 8);
    const size_t es = ck_dt_size((ck_dtype)dt);

// One 16-element step. With more rows than tokens the T activation vectors stay in registers and
// the R weight vectors are widened one at a time (T*R + T + 1 registers); otherwise the R widened
// weight vectors stay and the activations are loaded one at a time (T*R + R + 1 registers).
#define CK_DOT_BLOCK(kk)                                                                      \
    do {                                                                                      \
        if (R > T) {                                                                          \
            __m256 xv[4];                                                                     \
            for (int t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(xt[t] + (kk) * km);           \
            for (int r = 0; r < R; r++) {                                                     \
                __m256 w = w_lo(dt, wr[r], (kk));                                             \
                if (SAVE) _mm256_storeu_ps(ws + (size_t)r * in + (kk), w);                    \
                for (int t = 0; t < T; t++) acc[t][r] = _mm256_fmadd_ps(xv[t], w, acc[t][r]); \
            }                                                                                 \
            for (int t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(xt[t] + (kk) * km + 8);       \
            for (int r = 0; r < R; r++) {                                                     \
                __m256 w = w_hi(dt, wr[r], (kk));                                             \
                if (SAVE) _mm256_storeu_ps(ws + (size_t)r * in + (kk) + 8, w);                \
                for (int t = 0; t < T; t++) acc[t][r] = _mm256_fmadd_ps(xv[t], w, acc[t][r]); \
            }                                                                                 \
        } else {                                                                              \
            __m256 wv[8];                                                                     \
            for (int r = 0; r < R; r++) {                                                     \
                wv[r] = w_lo(dt, wr[r], (kk));                                                \
                if (SAVE) _mm256_storeu_ps(ws + (size_t)r * in + (kk), wv[r]);                \
            }                                                                                 \
            for (int t = 0; t < T; t++) {                                                     \
                __m256 xv = _mm256_loadu_ps(xt[t] + (kk) * km);                               \
                for (int r = 0; r < R; r++) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]); \
            }                                                                                 \
            for (int r = 0; r < R; r++) {                                                     \
                wv[r] = w_hi(dt, wr[r], (kk));                                                \
                if (SAVE) _mm256_storeu_ps(ws + (size_t)r * in + (kk) + 8, wv[r]);            \
            }                                                                                 \
            for (int t = 0; t < T; t++) {                                                     \
                __m256 xv = _mm256_loadu_ps(xt[t] + (kk) * km + 8);                           \
                for (int r = 0; r < R; r++) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]); \
            }                                                                                 \
        }                                                                                     \
    } while (0)

    size_t k = k0;
    if (pf_off) {
        // Look-ahead of g_pfd bytes along each row, continuing into the next tile's rows (which
        // start pf_off bytes after this tile's) near the end of the k range.
        const size_t d = (size_t)g_pfd / es, span = k16 - k0;
        for (; k + 32 <= k16; k += 32) {
            size_t kk = k + d;
            ptrdiff_t off = kk < k16 ? (ptrdiff_t)(kk * es) : pf_off + (ptrdiff_t)((kk - span) * es);
            for (int r = 0; r < R; r++) {
                const char *p = (const char *)wr[r] + off;
                _mm_prefetch(p, CK_PF_HINT);
                if (es == 4) _mm_prefetch(p + 64, CK_PF_HINT);
            }
            CK_DOT_BLOCK(k);
            CK_DOT_BLOCK(k + 16);
        }
    } else {
        for (; k + 32 <= k16; k += 32) {
            CK_DOT_BLOCK(k);
            CK_DOT_BLOCK(k + 16);
        }
    }
    for (; k < k16; k += 16) CK_DOT_BLOCK(k);
#undef CK_DOT_BLOCK

    if (!last) {
        for (int t = 0; t < T; t++)
            for (int r = 0; r < R; r++) _mm256_store_ps(vacc + (t * R + r) * 8, acc[t][r]);
        return;
    }
    const __m256 z = _mm256_setzero_ps();
    for (int t = 0; t < T; t++) {
        float s[8];
        _mm_storeu_ps(s, hsum4(acc[t][0], R > 1 ? acc[t][1] : z, R > 2 ? acc[t][2] : z,
                               R > 3 ? acc[t][3] : z));
        if (R > 4)
            _mm_storeu_ps(s + 4, hsum4(acc[t][4], R > 5 ? acc[t][5] : z, R > 6 ? acc[t][6] : z,
                                       R > 7 ? acc[t][7] : z));
        for (size_t kk = k16; kk < k1; kk++) {
            float xv = xld ? xt[t][kk] : xs[(kk & ~(size_t)15) * T + 16 * (size_t)t + (kk & 15)];
            for (int r = 0; r < R; r++) {
                float wk = ck_load_elem((ck_dtype)dt, wr[r], kk);
                if (SAVE && t == 0) ws[(size_t)r * in + kk] = wk;
                s[r] += xv * wk;
            }
        }
        float *yt = y + (size_t)t * ldy + o;
        for (int r = 0; r < R; r++) yt[r] = s[r];
    }
}

typedef void (*dot_fn)(const void *W, size_t in, int o, const float *xs, size_t xld, size_t k0,
                       size_t k16, size_t k1, float *vacc, int first, int last, float *y,
                       size_t ldy, ptrdiff_t pf_off, float *ws);

#define CK_DOT_INST2(NAME, DT, T, R, SAVE)                                                     \
    static CK_AVX2 void NAME(const void *W, size_t in, int o, const float *xs, size_t xld,     \
                             size_t k0, size_t k16, size_t k1, float *vacc, int first, int last, \
                             float *y, size_t ldy, ptrdiff_t pf_off, float *ws) {              \
        dot_tile(DT, T, R, SAVE, W, in, o, xs, xld, k0, k16, k1, vacc, first, last, y, ldy,     \
                 pf_off, ws);                                                                  \
    }
#define CK_DOT_INST(DT, T, R) CK_DOT_INST2(dot_##DT##_##T##_##R, DT, T, R, 0)
#define CK_SAVE_INST(T, R) CK_DOT_INST2(dot_save_##T##_##R, 1, T, R, 1)
#define CK_DOT_INST_T(DT)                                                                      \
    CK_DOT_INST(DT, 1, 1) CK_DOT_INST(DT, 1, 2) CK_DOT_INST(DT, 1, 3) CK_DOT_INST(DT, 1, 4)     \
    CK_DOT_INST(DT, 1, 5) CK_DOT_INST(DT, 1, 6) CK_DOT_INST(DT, 1, 7) CK_DOT_INST(DT, 1, 8)     \
    CK_DOT_INST(DT, 2, 1) CK_DOT_INST(DT, 2, 2) CK_DOT_INST(DT, 2, 3) CK_DOT_INST(DT, 2, 4)     \
    CK_DOT_INST(DT, 2, 5) CK_DOT_INST(DT, 2, 6)                                                 \
    CK_DOT_INST(DT, 3, 1) CK_DOT_INST(DT, 3, 2) CK_DOT_INST(DT, 3, 3) CK_DOT_INST(DT, 3, 4)     \
    CK_DOT_INST(DT, 4, 1) CK_DOT_INST(DT, 4, 2) CK_DOT_INST(DT, 4, 3)
CK_DOT_INST_T(0)
CK_DOT_INST_T(1)
CK_DOT_INST_T(2)

#define CK_DOT_TABLE(D)                                                                         \
    {{dot_##D##_1_1, dot_##D##_1_2, dot_##D##_1_3, dot_##D##_1_4, dot_##D##_1_5, dot_##D##_1_6,   \
      dot_##D##_1_7, dot_##D##_1_8},                                                              \
     {dot_##D##_2_1, dot_##D##_2_2, dot_##D##_2_3, dot_##D##_2_4, dot_##D##_2_5, dot_##D##_2_6,   \
      NULL, NULL},                                                                                \
     {dot_##D##_3_1, dot_##D##_3_2, dot_##D##_3_3, dot_##D##_3_4, NULL, NULL, NULL, NULL},        \
     {dot_##D##_4_1, dot_##D##_4_2, dot_##D##_4_3, NULL, NULL, NULL, NULL, NULL}}
// [dtype][T-1][R-1]; NULL where T*R accumulators would not fit the 16 registers.
static const dot_fn dot_table[3][4][8] = {CK_DOT_TABLE(0), CK_DOT_TABLE(1), CK_DOT_TABLE(2)};
// f16 tiles of the first group that also save the widened weights (T = 4, R <= 3: see small_range).
CK_SAVE_INST(1, 1) CK_SAVE_INST(1, 2) CK_SAVE_INST(1, 3) CK_SAVE_INST(2, 1) CK_SAVE_INST(2, 2)
CK_SAVE_INST(2, 3) CK_SAVE_INST(3, 1) CK_SAVE_INST(3, 2) CK_SAVE_INST(3, 3) CK_SAVE_INST(4, 1)
CK_SAVE_INST(4, 2) CK_SAVE_INST(4, 3)
static const dot_fn dot_save_table[4][3] = {
    {dot_save_1_1, dot_save_1_2, dot_save_1_3}, {dot_save_2_1, dot_save_2_2, dot_save_2_3},
    {dot_save_3_1, dot_save_3_2, dot_save_3_3}, {dot_save_4_1, dot_save_4_2, dot_save_4_3}};

// Rows per tile for a single group of T tokens (T*R accumulators + R weight vectors <= 16 regs).
static inline int rows_for(int T) { return T == 1 ? g_r1 : T == 2 ? 4 : 3; }

static size_t small_vacc_floats(int n) {
    return (size_t)(g_rb / 3 + 1) * (size_t)((n + 3) / 4) * 96;
}

// n == 1: stream the rows, R at a time, prefetching the next tile's rows.
static void gemv_range(ck_dtype dt, const void *W, int in, const float *xs, float *y, int o0, int o1) {
    const int R = g_r1;
    const size_t k16 = (size_t)in / 16 * 16, es = ck_dt_size(dt);
    const ptrdiff_t pf = (ptrdiff_t)((size_t)g_pf * R * in * es);
    for (int o = o0; o < o1; o += R) {
        int r = o1 - o < R ? o1 - o : R;
        dot_table[dt][0][r - 1](W, (size_t)in, o, xs, 0, 0, k16, (size_t)in, NULL, 1, 1, y, 0, pf, NULL);
    }
}

// k per block for the small path: all of k unless the activations exceed g_xbytes.
static size_t small_kc(int n, int in) {
    size_t kc = (size_t)g_xbytes / ((size_t)n * 4) / 16 * 16;
    if (kc < 256) kc = 256;
    return kc >= (size_t)in ? (size_t)in : kc;
}


// xs: staged activations, group g at xs + gstart[g]*xld, its tokens interleaved per 16-block.
static void small_range(ck_dtype dt, const void *W, int in, const float *xs, size_t xld, int n,
                        float *y, size_t ldy, int o0, int o1, float *vacc, float *wt) {
    int gsize[CK_SMALL_GROUPS_MAX], gstart[CK_SMALL_GROUPS_MAX];
    const int ngroups = ck_token_groups(n, 4, gsize, gstart);
    const int R = ngroups == 1 ? rows_for(n) : 3;
    const size_t es = ck_dt_size(dt);
    const size_t kc = small_kc(n, in);
    const int save_f16 = dt == CK_F16 && ngroups > 1 && wt && kc == (size_t)in;
    const int rb = (kc == (size_t)in) ? (o1 - o0) : g_rb;
    const size_t k16all = (size_t)in / 16 * 16;
    for (int ob = o0; ob < o1; ob += rb) {
        const int oe = ob + rb < o1 ? ob + rb : o1;
        for (size_t kb = 0; kb < (size_t)in; kb += kc) {
            const size_t ke = kb + kc < (size_t)in ? kb + kc : (size_t)in;
            const int last = ke == (size_t)in;
            const size_t k16 = ke < k16all ? ke : k16all;
            int ti = 0;
            for (int o = ob; o < oe; o += R, ti++) {
                const int r = oe - o < R ? oe - o : R;
                // Where the next tile reads, relative to this one: R rows further, or the start of
                // the next k-block / row block.
                ptrdiff_t pf = 0;
                if (g_pf) {
                    if (o + R < oe) pf = (ptrdiff_t)((size_t)R * in * es);
                    else if (!last) pf = (ptrdiff_t)(kc * es) - (ptrdiff_t)((size_t)(o - ob) * in * es);
                    else pf = (ptrdiff_t)((size_t)R * in * es) - (ptrdiff_t)(kb * es);
                }
                for (int g = 0; g < ngroups; g++) {
                    float *va = vacc ? vacc + ((size_t)ti * ngroups + g) * 96 : NULL;
                    const float *xg = xs + (size_t)gstart[g] * xld;
                    float *yg = y + (size_t)gstart[g] * ldy;
                    if (save_f16 && g == 0) // f16, first group: widen in registers and keep the result
                        dot_save_table[gsize[g] - 1][r - 1](W, (size_t)in, o, xg, 0, kb, k16, ke, va, kb == 0,
                                                            last, yg, ldy, pf, wt);
                    else if (save_f16)      // f16, other groups: the widened rows, as f32
                        dot_table[CK_F32][gsize[g] - 1][r - 1](wt, (size_t)in, 0, xg, 0, kb, k16, ke, va, kb == 0,
                                                               last, yg + o, ldy, 0, NULL);
                    else
                        dot_table[dt][gsize[g] - 1][r - 1](W, (size_t)in, o, xg, 0, kb, k16, ke, va, kb == 0,
                                                           last, yg, ldy, g == 0 ? pf : 0, NULL);
                }
            }
        }
    }
}

// ============================================================================================
// GEMM path (prefill)
// ============================================================================================

#define CK_KC 256 // k per block (row stride of the converted weight block)
#define CK_OB 96  // rows per block (multiple of 6 and 12)
#define CK_NB6 (CK_OB / 6)

// dst[0..count) = widened src row segment (CK_I8: (float)q * scale, rounded once; CK_Q4 goes
// through widen_q4).
CK_INLINE CK_AVX2 void widen(ck_dtype dt, const void *src, float *dst, size_t count, float scale) {
    size_t i = 0;
    if (dt == CK_I8) {
        const int8_t *s = src;
        const __m256 sc = _mm256_set1_ps(scale);
        for (; i + 16 <= count; i += 16) {
            __m256i a = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(s + i)));
            __m256i b = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(s + i + 8)));
            _mm256_store_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(a), sc));
            _mm256_store_ps(dst + i + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(b), sc));
        }
        for (; i < count; i++) dst[i] = (float)s[i] * scale;
    } else if (dt == CK_BF16) {
        const uint16_t *s = src;
        for (; i + 16 <= count; i += 16) {
            __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i + 8)));
            _mm256_store_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(a, 16)));
            _mm256_store_ps(dst + i + 8, _mm256_castsi256_ps(_mm256_slli_epi32(b, 16)));
        }
        for (; i < count; i++) dst[i] = ck_bf16_to_f32(s[i]);
    } else if (dt == CK_F16) {
        const uint16_t *s = src;
        for (; i + 16 <= count; i += 16) {
            _mm256_store_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
            _mm256_store_ps(dst + i + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i + 8))));
        }
        for (; i < count; i++) {
            uint16_t h = s[i];
            dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
        }
    } else {
        memcpy(dst, src, count * 4);
    }
}

// 16 tokens x 6 rows. xg: [k][16] (64-byte aligned), wc: 6 rows with stride CK_KC.
// cs: 6 x 16 accumulator tile (row r at cs + 16 r).
static CK_AVX2 void mk16x6(const float *xg, const float *wc, int kl, float *cs, int first) {
    __m256 c00, c01, c02, c03, c04, c05, c10, c11, c12, c13, c14, c15;
    if (first) {
        c00 = c01 = c02 = c03 = c04 = c05 = _mm256_setzero_ps();
        c10 = c11 = c12 = c13 = c14 = c15 = _mm256_setzero_ps();
    } else {
        c00 = _mm256_load_ps(cs + 0);  c10 = _mm256_load_ps(cs + 8);
        c01 = _mm256_load_ps(cs + 16); c11 = _mm256_load_ps(cs + 24);
        c02 = _mm256_load_ps(cs + 32); c12 = _mm256_load_ps(cs + 40);
        c03 = _mm256_load_ps(cs + 48); c13 = _mm256_load_ps(cs + 56);
        c04 = _mm256_load_ps(cs + 64); c14 = _mm256_load_ps(cs + 72);
        c05 = _mm256_load_ps(cs + 80); c15 = _mm256_load_ps(cs + 88);
    }
#define CK_MK_STEP(k)                                                                   \
    do {                                                                                \
        __m256 a0 = _mm256_load_ps(xg + 16 * (k)), a1 = _mm256_load_ps(xg + 16 * (k) + 8); \
        __m256 b;                                                                       \
        b = _mm256_broadcast_ss(wc + 0 * CK_KC + (k));                                  \
        c00 = _mm256_fmadd_ps(a0, b, c00); c10 = _mm256_fmadd_ps(a1, b, c10);           \
        b = _mm256_broadcast_ss(wc + 1 * CK_KC + (k));                                  \
        c01 = _mm256_fmadd_ps(a0, b, c01); c11 = _mm256_fmadd_ps(a1, b, c11);           \
        b = _mm256_broadcast_ss(wc + 2 * CK_KC + (k));                                  \
        c02 = _mm256_fmadd_ps(a0, b, c02); c12 = _mm256_fmadd_ps(a1, b, c12);           \
        b = _mm256_broadcast_ss(wc + 3 * CK_KC + (k));                                  \
        c03 = _mm256_fmadd_ps(a0, b, c03); c13 = _mm256_fmadd_ps(a1, b, c13);           \
        b = _mm256_broadcast_ss(wc + 4 * CK_KC + (k));                                  \
        c04 = _mm256_fmadd_ps(a0, b, c04); c14 = _mm256_fmadd_ps(a1, b, c14);           \
        b = _mm256_broadcast_ss(wc + 5 * CK_KC + (k));                                  \
        c05 = _mm256_fmadd_ps(a0, b, c05); c15 = _mm256_fmadd_ps(a1, b, c15);           \
    } while (0)
    int k = 0;
    for (; k + 4 <= kl; k += 4) {
        CK_MK_STEP(k); CK_MK_STEP(k + 1); CK_MK_STEP(k + 2); CK_MK_STEP(k + 3);
    }
    for (; k < kl; k++) CK_MK_STEP(k);
#undef CK_MK_STEP
    _mm256_store_ps(cs + 0, c00);  _mm256_store_ps(cs + 8, c10);
    _mm256_store_ps(cs + 16, c01); _mm256_store_ps(cs + 24, c11);
    _mm256_store_ps(cs + 32, c02); _mm256_store_ps(cs + 40, c12);
    _mm256_store_ps(cs + 48, c03); _mm256_store_ps(cs + 56, c13);
    _mm256_store_ps(cs + 64, c04); _mm256_store_ps(cs + 72, c14);
    _mm256_store_ps(cs + 80, c05); _mm256_store_ps(cs + 88, c15);
}

// 8 tokens x 12 rows (for a last group of <= 8 tokens). Rows 0-5 go to tile cs, rows 6-11 to the
// next tile (cs + 96); tokens 0-7 of each row.
static CK_AVX2 void mk8x12(const float *xg, const float *wc, int kl, float *cs, int first) {
    __m256 c[12];
    for (int r = 0; r < 12; r++)
        c[r] = first ? _mm256_setzero_ps() : _mm256_load_ps(cs + (r / 6) * 96 + (r % 6) * 16);
    for (int k = 0; k < kl; k++) {
        __m256 a = _mm256_load_ps(xg + 16 * k);
        for (int r = 0; r < 12; r++)
            c[r] = _mm256_fmadd_ps(a, _mm256_broadcast_ss(wc + r * CK_KC + k), c[r]);
    }
    for (int r = 0; r < 12; r++) _mm256_store_ps(cs + (r / 6) * 96 + (r % 6) * 16, c[r]);
}

CK_INLINE CK_AVX2 void transpose8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// xp[g][k][j] = x[(16g + j)*ldx + k] (0 for tokens >= n), groups [g0, g1).
CK_AVX2 void ck_avx2_pack_groups(int in, const float *x, int ldx, int n, float *xp, int g0, int g1) {
    for (int g = g0; g < g1; g++) {
        float *dst = xp + (size_t)g * in * 16;
        for (int h = 0; h < 2; h++) {
            int t0 = 16 * g + 8 * h;
            const float *rows[8];
            int valid[8];
            for (int j = 0; j < 8; j++) {
                valid[j] = t0 + j < n;
                rows[j] = valid[j] ? x + (size_t)(t0 + j) * ldx : x;
            }
            int k = 0;
            for (; k + 8 <= in; k += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++) r[j] = valid[j] ? _mm256_loadu_ps(rows[j] + k) : _mm256_setzero_ps();
                transpose8(r);
                for (int j = 0; j < 8; j++) _mm256_store_ps(dst + (size_t)(k + j) * 16 + 8 * h, r[j]);
            }
            for (; k < in; k++)
                for (int j = 0; j < 8; j++) dst[(size_t)k * 16 + 8 * h + j] = valid[j] ? rows[j][k] : 0.0f;
        }
    }
}

// dst[0..count) = the dequantised weights of a CK_Q4 row from k = 64 * (the group q points at),
// count <= the remaining elements: d * (nibble - 8), the exact product of an f16 and a small
// integer (ck_q4.h). d points at the scale of the group's first block.
CK_INLINE CK_AVX2 void widen_q4(const uint8_t *q, const uint16_t *d, float *dst, size_t count) {
    const __m256i low = _mm256_set1_epi32(0x0f), eight = _mm256_set1_epi32(8);
    for (size_t i = 0; i < count; i += 32, d++) {
        const __m256 scale = _mm256_set1_ps(_cvtsh_ss(*d));
        const uint8_t *g = q + (i / 64) * 32;
        const int shift = (i / 32) & 1 ? 4 : 0;
        _Alignas(32) float block[32];
        float *out = count - i >= 32 ? dst + i : block; // dst: 32-byte aligned (CK_KC rows, i % 32 == 0)
        for (int p = 0; p < 4; p++) {
            const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(g + 8 * p)));
            const __m256i w = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(bytes, shift), low), eight);
            _mm256_store_ps(out + 8 * p, _mm256_mul_ps(_mm256_cvtepi32_ps(w), scale));
        }
        if (out == block) memcpy(dst + i, block, (count - i) * sizeof(float));
    }
}

static CK_AVX2 int gemm_range(ck_dtype dt, const void *W, const void *scales, int in, const float *xp, int n,
                              float *y, size_t ldy, int o0, int o1, ck_scratch *s) {
    const int ngroups = (n + 15) / 16;
    float *wc = ck_buf_reserve(&s->wc, (size_t)CK_OB * CK_KC + 16);
    float *cs = ck_buf_reserve(&s->cs, (size_t)ngroups * CK_NB6 * 96);
    if (!wc || !cs) return -1;
    // Addressing by bytes: a CK_Q4 row is ceil(in / 64) groups of 32 bytes, k at byte k / 2 (k a
    // multiple of CK_KC, so of 64).
    const int q4 = dt == CK_Q4;
    const size_t es = ck_dt_size(dt), nbq = ((size_t)in + 31) / 32;
    const size_t row_bytes = q4 ? ((size_t)in + 63) / 64 * 32 : (size_t)in * es;
#define CK_K_BYTES(k) (q4 ? (size_t)(k) / 2 : (size_t)(k) * es)
    const int last_narrow = n - 16 * (ngroups - 1) <= 8;
    for (int ob = o0; ob < o1; ob += CK_OB) {
        int nb = o1 - ob < CK_OB ? o1 - ob : CK_OB;
        int nbp = (nb + 11) / 12 * 12;
        for (int kb = 0; kb < in; kb += CK_KC) {
            int kl = in - kb < CK_KC ? in - kb : CK_KC;
            for (int r = 0; r < nb; r++) {
                const char *src = (const char *)W + (size_t)(ob + r) * row_bytes + CK_K_BYTES(kb);
                if (q4)
                    widen_q4((const uint8_t *)src, (const uint16_t *)scales + (size_t)(ob + r) * nbq + kb / 32,
                             wc + (size_t)r * CK_KC, (size_t)kl);
                else
                    widen(dt, src, wc + (size_t)r * CK_KC, (size_t)kl, scales ? ((const float *)scales)[ob + r] : 1.0f);
            }
            for (int r = nb; r < nbp; r++) memset(wc + (size_t)r * CK_KC, 0, (size_t)kl * 4);
            // While this block is computed, prefetch the next one (the same rows' next k-block, or
            // the next row block), spread over the microkernel calls.
            int pr0 = ob, pk0 = kb + CK_KC, pnb = nb;
            if (pk0 >= in) { pr0 = ob + CK_OB; pk0 = 0; pnb = o1 - pr0 < CK_OB ? o1 - pr0 : CK_OB; }
            const int pkl = in - pk0 < CK_KC ? in - pk0 : CK_KC;
            const int lines_per_row = pnb > 0 ? (int)((CK_K_BYTES(pkl) + 63) / 64) : 0;
            const int plines = g_pf ? pnb * lines_per_row : 0;
            const int calls = ngroups * (nbp / 6);
            const int per_call = calls ? (plines + calls - 1) / calls : 0;
            int pl = 0;
#define CK_PF_NEXT()                                                                             \
    for (int q = 0; q < per_call && pl < plines; q++, pl++)                                      \
        _mm_prefetch((const char *)W + (size_t)(pr0 + pl / lines_per_row) * row_bytes + CK_K_BYTES(pk0) + \
                         (size_t)(pl % lines_per_row) * 64, CK_PF_HINT)
            for (int g = 0; g < ngroups; g++) {
                const float *xg = xp + ((size_t)g * in + kb) * 16;
                float *cg = cs + (size_t)g * CK_NB6 * 96;
                if (g == ngroups - 1 && last_narrow) {
                    for (int m = 0; m < nbp / 6; m += 2) {
                        CK_PF_NEXT();
                        CK_PF_NEXT();
                        mk8x12(xg, wc + (size_t)m * 6 * CK_KC, kl, cg + (size_t)m * 96, kb == 0);
                    }
                } else {
                    for (int m = 0; m < nbp / 6; m++) {
                        CK_PF_NEXT();
                        mk16x6(xg, wc + (size_t)m * 6 * CK_KC, kl, cg + (size_t)m * 96, kb == 0);
                    }
                }
            }
#undef CK_PF_NEXT
        }
#undef CK_K_BYTES
        for (int t = 0; t < n; t++) {
            const float *ct = cs + (size_t)(t / 16) * CK_NB6 * 96 + (t % 16);
            float *yt = y + (size_t)t * ldy + ob;
            for (int o = 0; o < nb; o++) yt[o] = ct[(o / 6) * 96 + (o % 6) * 16];
        }
    }
    return 0;
}

// ============================================================================================
// Preparation and entry
// ============================================================================================

static size_t round16(int in) { return ((size_t)in + 15) / 16 * 16; }

// Small path: n == 1 reads x in place (bf16 needs the even/odd order, so it is staged); n > 1 stages
// x for every dtype, each token group interleaved per 16-block (see dot_tile). GEMM path:
// [group of 16][k][16] packing.
size_t ck_avx2_prep_floats(ck_dtype dt, int in, int n) {
    if (!ck_dt_quantized(dt) && ck_avx2_use_small(n)) {
        if (n == 1 && dt != CK_BF16) return 0;
        return ck_simd_level() >= 2 ? ck_avx512_prep_floats(in, n) : (size_t)n * round16(in);
    }
    return (size_t)((n + 15) / 16) * (size_t)in * 16;
}

static CK_AVX2 void stage_small(ck_dtype dt, int in, const float *x, int ldx, int n, float *xs) {
    int gsize[CK_SMALL_GROUPS_MAX], gstart[CK_SMALL_GROUPS_MAX];
    const int ngroups = ck_token_groups(n, 4, gsize, gstart);
    const size_t k16 = (size_t)in / 16 * 16, ld = round16(in);
    for (int g = 0; g < ngroups; g++) {
        const size_t T = (size_t)gsize[g];
        float *base = xs + (size_t)gstart[g] * ld;
        for (size_t t = 0; t < T; t++) {
            const float *src = x + (size_t)(gstart[g] + (int)t) * ldx;
            size_t k = 0;
            for (; k < k16; k += 16) {
                float *dst = base + k * T + 16 * t;
                __m256 a = _mm256_loadu_ps(src + k), b = _mm256_loadu_ps(src + k + 8);
                if (dt == CK_BF16) { // even elements, then odd ones
                    __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); // a0 a2 b0 b2 | a4 a6 b4 b6
                    __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
                    a = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
                    b = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0)));
                }
                _mm256_storeu_ps(dst, a);
                _mm256_storeu_ps(dst + 8, b);
            }
            for (; k < (size_t)in; k++) base[k16 * T + 16 * t + (k - k16)] = src[k];
        }
    }
}

void ck_avx2_prepare(ck_dtype dt, int in, const float *x, int ldx, int n, float *buf, ck_xprep *px) {
    px->small = !ck_dt_quantized(dt) && ck_avx2_use_small(n);
    px->scales = NULL;
    px->xs = x;
    px->xs_ld = (size_t)ldx;
    px->xp = NULL;
    if (px->small) {
        if (n > 1 || dt == CK_BF16) {
            if (ck_simd_level() >= 2) {
                ck_avx512_stage(dt, in, x, ldx, n, buf);
                px->xs_ld = ck_avx512_prep_floats(in, 1);
            } else {
                stage_small(dt, in, x, ldx, n, buf);
                px->xs_ld = round16(in);
            }
            px->xs = buf;
        }
    } else {
        px->xp = buf;
    }
}

int ck_avx2_range(ck_dtype dt, const void *W, int in, const float *x, int ldx, const ck_xprep *px,
                  int n, float *y, int ldy, int o0, int o1, ck_scratch *s) {
    (void)x; (void)ldx;
    if (o0 >= o1) return 0;
    if (px->small) {
        if (ck_simd_level() >= 2) return ck_avx512_range(dt, W, in, px->xs, px->xs_ld, n, y, (size_t)ldy, o0, o1, s);
        if (n == 1) {
            gemv_range(dt, W, in, px->xs, y, o0, o1);
            return 0;
        }
        float *vacc = NULL, *wt = NULL;
        if (small_kc(n, in) < (size_t)in && !(vacc = ck_buf_reserve(&s->cs, small_vacc_floats(n))))
            return -1;
        if (dt == CK_F16 && n > 4 && !(wt = ck_buf_reserve(&s->wc, 4 * (size_t)in)))
            return -1;
        small_range(dt, W, in, px->xs, px->xs_ld, n, y, (size_t)ldy, o0, o1, vacc, wt);
        return 0;
    }
    return gemm_range(dt, W, px->scales, in, px->xp, n, y, (size_t)ldy, o0, o1, s);
}

// ============================================================================================
// Conversions
// ============================================================================================

CK_AVX2 void ck_avx2_to_f32(ck_dtype dt, const void *src, float *dst, size_t count) {
    size_t i = 0;
    const uint16_t *s = src;
    if (dt == CK_BF16) {
        for (; i + 8 <= count; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
        for (; i < count; i++) dst[i] = ck_bf16_to_f32(s[i]);
    } else if (dt == CK_F16) {
        for (; i + 8 <= count; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        if (i < count) {
            uint16_t tmp[8] = {0};
            float out[8];
            memcpy(tmp, s + i, (count - i) * 2);
            _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp)));
            memcpy(dst + i, out, (count - i) * 4);
        }
    } else {
        memmove(dst, src, count * 4);
    }
}

CK_AVX2 void ck_avx2_from_f32(ck_dtype dt, const float *src, void *dst, size_t count) {
    size_t i = 0;
    uint16_t *d = dst;
    if (dt == CK_BF16) {
        const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
        const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), qbit = _mm256_set1_epi32(0x40);
        for (; i + 16 <= count; i += 16) {
            __m256i r[2];
            for (int h = 0; h < 2; h++) {
                __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i + 8 * h));
                __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
                __m256i rnd = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
                __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), qbit);
                r[h] = _mm256_blendv_epi8(_mm256_srli_epi32(rnd, 16), q, nan);
            }
            __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), _MM_SHUFFLE(3, 1, 2, 0));
            _mm256_storeu_si256((__m256i *)(d + i), p);
        }
        for (; i < count; i++) d[i] = ck_f32_to_bf16(src[i]);
    } else if (dt == CK_F16) {
        for (; i + 8 <= count; i += 8)
            _mm_storeu_si128((__m128i *)(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (i < count) {
            float tmp[8] = {0};
            uint16_t out[8];
            memcpy(tmp, src + i, (count - i) * 4);
            _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(_mm256_loadu_ps(tmp), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            memcpy(d + i, out, (count - i) * 2);
        }
    } else {
        memmove(dst, src, count * 4);
    }
}

// ============================================================================================
// Attention's inner loops (the arithmetic is stated at ck_attention_rows, ck_ops.h)
// ============================================================================================

CK_AVX2 void ck_avx2_attention_scores(const float *q, const float *K, size_t stride, int count, int d, float scale,
                                      float *s) {
    for (int t = 0; t < count; t++) {
        const float *k = K + (size_t)t * stride;
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
        s[t] = ck_hsum256(acc) * scale;
    }
}

CK_AVX2 void ck_avx2_attention_accumulate(const float *e, const float *V, size_t stride, int count, int d, float *acc) {
    int i = 0;
    // 32 columns at a time in registers across all positions of the chunk; then 8 at a time.
    for (; i + 32 <= d; i += 32) {
        __m256 a0 = _mm256_loadu_ps(acc + i), a1 = _mm256_loadu_ps(acc + i + 8);
        __m256 a2 = _mm256_loadu_ps(acc + i + 16), a3 = _mm256_loadu_ps(acc + i + 24);
        for (int t = 0; t < count; t++) {
            const float *v = V + (size_t)t * stride + i;
            const __m256 p = _mm256_broadcast_ss(e + t);
            a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v), a0);
            a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8), a1);
            a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 16), a2);
            a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 24), a3);
        }
        _mm256_storeu_ps(acc + i, a0);
        _mm256_storeu_ps(acc + i + 8, a1);
        _mm256_storeu_ps(acc + i + 16, a2);
        _mm256_storeu_ps(acc + i + 24, a3);
    }
    for (; i < d; i += 8) {
        __m256 a = _mm256_loadu_ps(acc + i);
        for (int t = 0; t < count; t++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(e + t), _mm256_loadu_ps(V + (size_t)t * stride + i), a);
        _mm256_storeu_ps(acc + i, a);
    }
}

#else // !CK_X86: the AVX2 entry points are never selected

int ck_avx2_use_small(int n) { (void)n; return 1; }
int ck_avx2_small_nmax(void) { return 1 << 30; }
void ck_kernels_tune(const char *key, int value) { (void)key; (void)value; }
size_t ck_avx2_prep_floats(ck_dtype dt, int in, int n) { (void)dt; (void)in; (void)n; return 0; }
void ck_avx2_prepare(ck_dtype dt, int in, const float *x, int ldx, int n, float *buf, ck_xprep *px) {
    (void)dt; (void)in; (void)x; (void)ldx; (void)n; (void)buf; (void)px;
}
void ck_avx2_pack_groups(int in, const float *x, int ldx, int n, float *xp, int g0, int g1) {
    (void)in; (void)x; (void)ldx; (void)n; (void)xp; (void)g0; (void)g1;
}
int ck_avx2_range(ck_dtype dt, const void *W, int in, const float *x, int ldx, const ck_xprep *px,
                  int n, float *y, int ldy, int o0, int o1, ck_scratch *s) {
    (void)px; (void)s;
    ck_scalar_range(dt, W, in, x, ldx, n, y, ldy, o0, o1);
    return 0;
}
void ck_avx2_to_f32(ck_dtype dt, const void *src, float *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = ck_load_elem(dt, src, i);
}
void ck_avx2_from_f32(ck_dtype dt, const float *src, void *dst, size_t count) {
    (void)dt; (void)src; (void)dst; (void)count;
}
void ck_avx2_attention_scores(const float *q, const float *K, size_t stride, int count, int d, float scale, float *s) {
    (void)q; (void)K; (void)stride; (void)count; (void)d; (void)scale; (void)s;
}
void ck_avx2_attention_accumulate(const float *e, const float *V, size_t stride, int count, int d, float *acc) {
    (void)e; (void)V; (void)stride; (void)count; (void)d; (void)acc;
}
#endif
