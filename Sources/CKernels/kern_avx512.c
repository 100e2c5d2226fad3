// AVX-512 (F, BW, VL, DQ) dot-product kernels for the small-n path of ck_matmul (n <= the AVX2
// path's small_nmax: decode, verification, the rows of a batched pass). Every function that
// executes AVX-512 instructions carries CK_AVX512; they are reached only at simd level 2 (see
// matmul.c). The GEMM path (prefill) and the 4-bit kernels stay on AVX2; the int8 small-n kernel
// has its AVX-512 form in q8.c.
//
// Why: past ~4 rows a pass is bound by FMA throughput, not by the weight stream, and a core with
// full-width 512-bit units (Zen 5, Intel server cores) retires twice the f32 FMAs per cycle with
// zmm registers; 32 of them also hold bigger tiles, so each widened weight vector feeds more FMAs.
//
// Arithmetic (the order, which fixes every bit): for token t and output row o,
//   y[t][o] = ck_hsum512(acc) + x[t][k32] * w[o][k32] + ... + x[t][in-1] * w[o][in-1]   (the tail, in k order)
// where acc is a 16-lane f32 vector accumulated by fused multiply-add over the whole 32-element
// blocks k = 0, 32, 64, ... < k32 = in / 32 * 32, each block in two steps:
//   bf16: lane i += x[k + 2i] * w[k + 2i], then lane i += x[k + 2i + 1] * w[k + 2i + 1]
//         (even elements by a 16-bit shift of the 32-bit lanes, odd ones by a mask; the activations
//         are staged in that even/odd order);
//   f16, f32: lane i += x[k + i] * w[k + i], then lane i += x[k + 16 + i] * w[k + 16 + i];
// and ck_hsum512(v) = s0 + s1 with s = (v[0..7] + v[8..15]) folded as ck_hsum256 does:
//   ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) of the 8 sums.
// Each (t, o) has its own accumulator, so the result depends on x row t and w row o only: never on
// n, on the token groups or row tiles a call is cut into, on k blocking (accumulators are saved and
// restored exactly) or on the thread count. It differs from the AVX2 kernels' order (8 lanes), so a
// process uses one kernel set throughout (the level is fixed at start-up).
#include "ck_internal.h"

#if CK_X86
#include <immintrin.h>

// 32 consecutive weights of one row as two f32 vectors, in the order stated above.
CK_INLINE CK_AVX512 __m512 w32_lo(int dt, const void *w, size_t k) {
    if (dt == CK_BF16) {
        __m512i v = _mm512_loadu_si512((const void *)((const uint16_t *)w + k));
        return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    } else if (dt == CK_F16) {
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k)));
    }
    return _mm512_loadu_ps((const float *)w + k);
}
CK_INLINE CK_AVX512 __m512 w32_hi(int dt, const void *w, size_t k) {
    if (dt == CK_BF16) {
        // As in the AVX2 kernels: re-loading (folded into the vpandd) beats keeping R loaded
        // vectors alive.
        __asm__("" : "+r"(w));
        __m512i v = _mm512_loadu_si512((const void *)((const uint16_t *)w + k));
        return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
    } else if (dt == CK_F16) {
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k + 16)));
    }
    return _mm512_loadu_ps((const float *)w + k + 16);
}


// Software prefetch along each weight row: g_pfd bytes ahead, into L2 (T1) unless g_pfhint is 0
// (into L1, T0, as the AVX2 kernels). Measured on a 2-core Zen 4 (kernel-bench --quick, bf16, 4
// rounds interleaved): T0 at 1024 B gave 26-28 GB/s at n = 1 and 168-176 GFLOP/s at n = 16; T1 at
// 2048-4096 B 30-34 GB/s and 181-205 GFLOP/s, with n = 8 unchanged (163-173). Lines requested
// into L1 occupy its few miss buffers until they arrive; into L2 they leave those to the loads.
static int g_pfd = 2048;
static int g_pfhint = 1;
// With several token groups (bf16 activations only), group 0 used to stream the tile's rows from
// memory while groups 1.. re-read them from cache with the memory idle; instead every group g of G
// prefetches the 64-byte lines j = g, g + G, ... of the next tile's rows along its k loop, so the
// stream runs through all groups (CK_TUNE pfshare=0: the old way). The f32-activation tiles are
// bound by FMA throughput there and measured no better with it.
static int g_pfshare = 1;

CK_INLINE CK_AVX512 void prefetch_row(const char *p) {
    if (g_pfhint) _mm_prefetch(p, _MM_HINT_T1);
    else _mm_prefetch(p, _MM_HINT_T0);
}
static int g_group = 0;        // tokens per group at most (4...8); 0: group_size(n)
static const int g_rb = 120;   // rows per block when k is blocked (a multiple of every R below)
#define CK_TILE_FLOATS (32 * 16) // one tile's saved accumulators at most (T*R <= 25 in the table below)

// s[t*8 + r] += x[t][k] * w[r][k] for k in [k32, k1), in k order (the tail of a tile, k1 - k32 < 32).
// xtail: the group's tail, element (t, k) at xtail + 32*t + (k - k32).
static __attribute__((noinline)) void tail512(int dt, int T, int R, const void *const *wr, const float *xtail, size_t k32,
                                              size_t k1, float *s) {
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++)
            for (size_t kk = k32; kk < k1; kk++)
                s[t * 8 + r] += xtail[32 * (size_t)t + (kk - k32)] * ck_load_elem((ck_dtype)dt, wr[r], kk);
}

// Tile of T tokens x R rows over the whole 32-blocks of [k0, k32), then, if `last`, the tail
// [k32, k1). xs: the group's tokens interleaved per 32-block, element (t, k) at
// xs + (k & ~31)*T + 32*t + (k & 31) (the tail the same way, in natural order). Accumulators start
// at zero (`first`) or from vacc and are saved to vacc (not `last`) or reduced into y[t*ldy + o + r].
// pf_off: as the AVX2 dot_tile (prefetch along each row, then into the next tile's rows); with
// pfG > 1 it is the next tile's offset, whose lines k/32 = pfg mod pfG this call prefetches.
CK_INLINE CK_AVX512 void dot_tile512(int dt, int T, int R, const void *W, size_t in, int o, const float *xs,
                                     size_t k0, size_t k32, size_t k1, float *vacc, int first, int last,
                                     float *y, size_t ldy, ptrdiff_t pf_off, int pfg, int pfG) {
    const size_t es = ck_dt_size((ck_dtype)dt);
    __m512 acc[8][8];
    const void *wr[8];
    for (int r = 0; r < R; r++) wr[r] = (const char *)W + (size_t)(o + r) * in * es;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++)
            acc[t][r] = first ? _mm512_setzero_ps() : _mm512_load_ps(vacc + (t * R + r) * 16);
// One 32-element step. With more rows than tokens the T activation vectors stay in registers and
// the R weight vectors are widened one at a time; otherwise the R widened weight vectors stay and
// the activations are loaded one at a time.
#define CK_STEP512(kk)                                                                          \
    do {                                                                                        \
        const float *xk = xs + (kk) * T;                                                        \
        if (R > T) {                                                                            \
            __m512 xv[8];                                                                       \
            for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(xk + 32 * t);                   \
            for (int r = 0; r < R; r++) {                                                       \
                __m512 w = w32_lo(dt, wr[r], (kk));                                             \
                for (int t = 0; t < T; t++) acc[t][r] = _mm512_fmadd_ps(xv[t], w, acc[t][r]);   \
            }                                                                                   \
            for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(xk + 32 * t + 16);              \
            for (int r = 0; r < R; r++) {                                                       \
                __m512 w = w32_hi(dt, wr[r], (kk));                                             \
                for (int t = 0; t < T; t++) acc[t][r] = _mm512_fmadd_ps(xv[t], w, acc[t][r]);   \
            }                                                                                   \
        } else {                                                                                \
            __m512 wv[8];                                                                       \
            for (int r = 0; r < R; r++) wv[r] = w32_lo(dt, wr[r], (kk));                        \
            for (int t = 0; t < T; t++) {                                                       \
                __m512 xv = _mm512_loadu_ps(xk + 32 * t);                                       \
                for (int r = 0; r < R; r++) acc[t][r] = _mm512_fmadd_ps(xv, wv[r], acc[t][r]);  \
            }                                                                                   \
            for (int r = 0; r < R; r++) wv[r] = w32_hi(dt, wr[r], (kk));                        \
            for (int t = 0; t < T; t++) {                                                       \
                __m512 xv = _mm512_loadu_ps(xk + 32 * t + 16);                                  \
                for (int r = 0; r < R; r++) acc[t][r] = _mm512_fmadd_ps(xv, wv[r], acc[t][r]);  \
            }                                                                                   \
        }                                                                                       \
    } while (0)

    size_t k = k0;
    if (pf_off && pfG > 1) {
        for (int phase = (pfG - pfg) % pfG; k < k32; k += 32) {
            if (phase == 0)
                for (int r = 0; r < R; r++) {
                    const char *p = (const char *)wr[r] + pf_off + (ptrdiff_t)(k * es);
                    prefetch_row(p);
                    if (es == 4) prefetch_row(p + 64);
                }
            if (++phase == pfG) phase = 0;
            CK_STEP512(k);
        }
    } else if (pf_off) {
        const size_t d = (size_t)g_pfd / es, span = k32 - k0;
        for (; k < k32; k += 32) {
            size_t kk = k + d;
            ptrdiff_t off = kk < k32 ? (ptrdiff_t)(kk * es) : pf_off + (ptrdiff_t)((kk - span) * es);
            for (int r = 0; r < R; r++) {
                const char *p = (const char *)wr[r] + off;
                prefetch_row(p);
                if (es == 4) prefetch_row(p + 64);
            }
            CK_STEP512(k);
        }
    } else {
        for (; k < k32; k += 32) CK_STEP512(k);
    }
#undef CK_STEP512
    if (!last) {
        for (int t = 0; t < T; t++)
            for (int r = 0; r < R; r++) _mm512_store_ps(vacc + (t * R + r) * 16, acc[t][r]);
        return;
    }
    float s[8][8];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) s[t][r] = ck_hsum512(acc[t][r]);
    // The tail in a function of its own: inlined here it keeps clang from holding the accumulators
    // in registers (every FMA above was then followed by a store).
    tail512(dt, T, R, wr, xs + k32 * T, k32, k1, &s[0][0]);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) y[(size_t)t * ldy + o + r] = s[t][r];
}

typedef void (*dot512_fn)(const void *W, size_t in, int o, const float *xs, size_t k0, size_t k32, size_t k1,
                          float *vacc, int first, int last, float *y, size_t ldy, ptrdiff_t pf_off, int pfg, int pfG);

#define CK_D512(DT, T, R)                                                                                   \
    static CK_AVX512 void d512_##DT##_##T##_##R(const void *W, size_t in, int o, const float *xs, size_t k0,  \
                                                size_t k32, size_t k1, float *vacc, int first, int last,     \
                                                float *y, size_t ldy, ptrdiff_t pf_off, int pfg, int pfG) {  \
        dot_tile512(DT, T, R, W, in, o, xs, k0, k32, k1, vacc, first, last, y, ldy, pf_off, pfg, pfG);      \
    }
#define CK_D512_ROWS8(DT, T)                                                                                \
    CK_D512(DT, T, 1) CK_D512(DT, T, 2) CK_D512(DT, T, 3) CK_D512(DT, T, 4) CK_D512(DT, T, 5)               \
    CK_D512(DT, T, 6) CK_D512(DT, T, 7) CK_D512(DT, T, 8)
#define CK_D512_DT(DT)                                                                                      \
    CK_D512_ROWS8(DT, 1) CK_D512_ROWS8(DT, 2) CK_D512_ROWS8(DT, 3)                                          \
    CK_D512(DT, 4, 1) CK_D512(DT, 4, 2) CK_D512(DT, 4, 3) CK_D512(DT, 4, 4) CK_D512(DT, 4, 5) CK_D512(DT, 4, 6) \
    CK_D512(DT, 5, 1) CK_D512(DT, 5, 2) CK_D512(DT, 5, 3) CK_D512(DT, 5, 4) CK_D512(DT, 5, 5)               \
    CK_D512(DT, 6, 1) CK_D512(DT, 6, 2) CK_D512(DT, 6, 3) CK_D512(DT, 6, 4)                                 \
    CK_D512(DT, 7, 1) CK_D512(DT, 7, 2) CK_D512(DT, 7, 3) CK_D512(DT, 8, 1) CK_D512(DT, 8, 2) CK_D512(DT, 8, 3)
CK_D512_DT(0)
CK_D512_DT(1)
CK_D512_DT(2)

#define CK_D512_ROW(DT, T)                                                                                  \
    {d512_##DT##_##T##_1, d512_##DT##_##T##_2, d512_##DT##_##T##_3, d512_##DT##_##T##_4,                    \
     d512_##DT##_##T##_5, d512_##DT##_##T##_6, d512_##DT##_##T##_7, d512_##DT##_##T##_8}
#define CK_D512_TABLE(DT)                                                                                   \
    {CK_D512_ROW(DT, 1), CK_D512_ROW(DT, 2), CK_D512_ROW(DT, 3),                                            \
     {d512_##DT##_4_1, d512_##DT##_4_2, d512_##DT##_4_3, d512_##DT##_4_4, d512_##DT##_4_5, d512_##DT##_4_6, \
      NULL, NULL},                                                                                          \
     {d512_##DT##_5_1, d512_##DT##_5_2, d512_##DT##_5_3, d512_##DT##_5_4, d512_##DT##_5_5, NULL, NULL, NULL}, \
     {d512_##DT##_6_1, d512_##DT##_6_2, d512_##DT##_6_3, d512_##DT##_6_4, NULL, NULL, NULL, NULL},          \
     {d512_##DT##_7_1, d512_##DT##_7_2, d512_##DT##_7_3, NULL, NULL, NULL, NULL, NULL},                     \
     {d512_##DT##_8_1, d512_##DT##_8_2, d512_##DT##_8_3, NULL, NULL, NULL, NULL, NULL}}
// [dtype][T-1][R-1]; NULL where T*R accumulators and the min(T, R) + 1 operand vectors would not
// fit the 32 registers.
static const dot512_fn d512_table[3][8][8] = {CK_D512_TABLE(0), CK_D512_TABLE(1), CK_D512_TABLE(2)};

// ---- bf16 activations (ck_set_bf16_activations; CPUs with AVX512_BF16) --------------------------
//
// Arithmetic: activations are rounded to bf16 (nearest even; in whole blocks a subnormal input
// counts as zero, as vcvtne2ps2bf16 does) and staged per 32-block as 32 bf16 in natural order,
// element (t, k) of a group of T at (uint16_t *)xs + (k & ~31)*T + 32*t + (k & 31) (half the bytes
// of the f32 staging, so more of it stays in L1); the tail as the rounded values in floats at
// xs + k32*T/2 + 32*t + (k - k32). For token t
// and output row o, one 16-lane accumulator takes, per whole block k = 0, 32, ... < k32, in order,
// one vdpbf16ps: lane i += x[k + 2i + 1] * w[k + 2i + 1], then += x[k + 2i] * w[k + 2i] (each
// product of two bf16 exact in f32; denormal results flushed to zero); then
//   y[t][o] = ck_hsum512(acc) + x[t][k32] * w[o][k32] + ... + x[t][in-1] * w[o][in-1]   (the tail, in k order).
// As above, each (t, o) has its own accumulator: rows never depend on n, tiles or threads.
#define CK_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

static CK_AVX512BF16 void stage_bf16_block(const float *src, uint16_t *dst) {
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
    _mm512_storeu_si512((void *)dst, (__m512i)h);
}

CK_INLINE CK_AVX512BF16 void dot_tile512_bh(int T, int R, const void *W, size_t in, int o, const float *xs,
                                            size_t k0, size_t k32, size_t k1, float *vacc, int first, int last,
                                            float *y, size_t ldy, ptrdiff_t pf_off, int pfg, int pfG) {
    __m512 acc[8][8];
    const uint16_t *wr[8];
    for (int r = 0; r < R; r++) wr[r] = (const uint16_t *)W + (size_t)(o + r) * in;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++)
            acc[t][r] = first ? _mm512_setzero_ps() : _mm512_load_ps(vacc + (t * R + r) * 16);
#define CK_STEPBH(kk)                                                                                       \
    do {                                                                                                    \
        const uint16_t *xk = (const uint16_t *)xs + (kk) * T;                                               \
        if (R > T) {                                                                                        \
            __m512bh xv[8];                                                                                 \
            for (int t = 0; t < T; t++) xv[t] = (__m512bh)_mm512_loadu_si512((const void *)(xk + 32 * t));  \
            for (int r = 0; r < R; r++) {                                                                   \
                const __m512bh w = (__m512bh)_mm512_loadu_si512((const void *)(wr[r] + (kk)));              \
                for (int t = 0; t < T; t++) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], xv[t], w);              \
            }                                                                                               \
        } else {                                                                                            \
            __m512bh wv[8];                                                                                 \
            for (int r = 0; r < R; r++) wv[r] = (__m512bh)_mm512_loadu_si512((const void *)(wr[r] + (kk))); \
            for (int t = 0; t < T; t++) {                                                                   \
                const __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xk + 32 * t));              \
                for (int r = 0; r < R; r++) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], xv, wv[r]);             \
            }                                                                                               \
        }                                                                                                   \
    } while (0)
    size_t k = k0;
    if (pf_off && pfG > 1) {
        for (int phase = (pfG - pfg) % pfG; k < k32; k += 32) {
            if (phase == 0)
                for (int r = 0; r < R; r++) prefetch_row((const char *)wr[r] + pf_off + (ptrdiff_t)(k * 2));
            if (++phase == pfG) phase = 0;
            CK_STEPBH(k);
        }
    } else if (pf_off) {
        const size_t d = (size_t)g_pfd / 2, span = k32 - k0;
        for (; k < k32; k += 32) {
            size_t kk = k + d;
            ptrdiff_t off = kk < k32 ? (ptrdiff_t)(kk * 2) : pf_off + (ptrdiff_t)((kk - span) * 2);
            for (int r = 0; r < R; r++) prefetch_row((const char *)wr[r] + off);
            CK_STEPBH(k);
        }
    } else {
        for (; k < k32; k += 32) CK_STEPBH(k);
    }
#undef CK_STEPBH
    if (!last) {
        for (int t = 0; t < T; t++)
            for (int r = 0; r < R; r++) _mm512_store_ps(vacc + (t * R + r) * 16, acc[t][r]);
        return;
    }
    float s[8][8];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) s[t][r] = ck_hsum512(acc[t][r]);
    tail512(CK_BF16, T, R, (const void *const *)wr, xs + k32 * T / 2, k32, k1, &s[0][0]);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) y[(size_t)t * ldy + o + r] = s[t][r];
}

#define CK_DBH(T, R)                                                                                      \
    static CK_AVX512BF16 void dbh_##T##_##R(const void *W, size_t in, int o, const float *xs, size_t k0,  \
                                            size_t k32, size_t k1, float *vacc, int first, int last,     \
                                            float *y, size_t ldy, ptrdiff_t pf_off, int pfg, int pfG) {  \
        dot_tile512_bh(T, R, W, in, o, xs, k0, k32, k1, vacc, first, last, y, ldy, pf_off, pfg, pfG);    \
    }
#define CK_DBH_ROWS8(T) CK_DBH(T, 1) CK_DBH(T, 2) CK_DBH(T, 3) CK_DBH(T, 4) CK_DBH(T, 5) CK_DBH(T, 6) CK_DBH(T, 7) CK_DBH(T, 8)
CK_DBH_ROWS8(1) CK_DBH_ROWS8(2) CK_DBH_ROWS8(3)
CK_DBH(4, 1) CK_DBH(4, 2) CK_DBH(4, 3) CK_DBH(4, 4) CK_DBH(4, 5) CK_DBH(4, 6)
CK_DBH(5, 1) CK_DBH(5, 2) CK_DBH(5, 3) CK_DBH(5, 4) CK_DBH(5, 5)
CK_DBH(6, 1) CK_DBH(6, 2) CK_DBH(6, 3) CK_DBH(6, 4)
CK_DBH(7, 1) CK_DBH(7, 2) CK_DBH(7, 3) CK_DBH(8, 1) CK_DBH(8, 2) CK_DBH(8, 3)
#define CK_DBH_ROW(T) {dbh_##T##_1, dbh_##T##_2, dbh_##T##_3, dbh_##T##_4, dbh_##T##_5, dbh_##T##_6, dbh_##T##_7, dbh_##T##_8}
// [T-1][R-1], the shapes of d512_table.
static const dot512_fn dbh_table[8][8] = {
    CK_DBH_ROW(1), CK_DBH_ROW(2), CK_DBH_ROW(3),
    {dbh_4_1, dbh_4_2, dbh_4_3, dbh_4_4, dbh_4_5, dbh_4_6, NULL, NULL},
    {dbh_5_1, dbh_5_2, dbh_5_3, dbh_5_4, dbh_5_5, NULL, NULL, NULL},
    {dbh_6_1, dbh_6_2, dbh_6_3, dbh_6_4, NULL, NULL, NULL, NULL},
    {dbh_7_1, dbh_7_2, dbh_7_3, NULL, NULL, NULL, NULL, NULL},
    {dbh_8_1, dbh_8_2, dbh_8_3, NULL, NULL, NULL, NULL, NULL}};

// Tokens come in groups of at most 8 (ck_token_groups(n, 8)): a group shares every widened weight
// vector. Rows per tile for groups of at most T tokens: as many as the registers allow (T = 1: four row
// streams, as the AVX2 gemv). Every group of a call uses the same R (sizes differ by one at most).
static int g_r1 = 4;            // rows per tile for one token (CK_TUNE r512)
static int rows_for512(int T) {
    static const int rows[9] = {0, 4, 8, 8, 6, 5, 4, 3, 3};
    return T == 1 ? g_r1 : rows[T];
}

// Tokens per group: up to 12 tokens one or two groups (each weight vector widened once or twice,
// tiles 8x3 ... 6x4), more in groups of 4 (tiles 4x6: twice the row streams); measured with
// kernel-bench on a Zen 5 (n = 8: 242-269 GFLOP/s as one group of 8 against 222-228 as two of 4;
// n = 16: 314-323 as four groups of 4 against 282-298 as two of 8).
static int group_size(int n) { return g_group ? g_group : n <= 12 ? 8 : 4; }

// With bf16 activations a 32-element step is one vdpbf16ps per accumulator instead of two FMAs, so
// compute hides under the weight stream up to more rows, and what is left is how evenly the stream
// runs: groups of 4 from 7 tokens on (tiles 4x6: six row streams instead of three, and every group
// prefetches its share of the next tile, see g_pfshare) against one group of up to 8 tokens before.
// Measured on a 2-core Zen 4 (4 layers of the 1B shapes, variants interleaved in one process, 9
// rounds): n = 8 17.0 ms against 19.3 as one group of 8 (n = 1: 15.3), n = 12 20.5 against 22.7,
// n = 16 24.9 against 29.1; n = 5 and 6 faster as one group (13.1 against 14.2 ms at n = 5).
static int g_groupbh = 0;
static int group_size_bh(int n) { return g_groupbh ? g_groupbh : n <= 6 ? 8 : 4; }
static int tokens_per_group(int n, int bf16x) { return bf16x ? group_size_bh(n) : group_size(n); }

/// Benchmarks while tuning (CK_TUNE=pfd512=…,pfhint512=0|1,r512=…,group512=…, via ck_kernels_tune).
void ck_avx512_tune(const char *key, int value) {
    if (!strcmp(key, "pfd512") && value >= 64) g_pfd = value;
    else if (!strcmp(key, "group512") && (value == 0 || (value >= 4 && value <= 8))) g_group = value;
    else if (!strcmp(key, "r512") && value >= 1 && value <= 8) g_r1 = value;
    else if (!strcmp(key, "pfhint512")) g_pfhint = value != 0;
    else if (!strcmp(key, "pfshare")) g_pfshare = value != 0;
    else if (!strcmp(key, "groupbh") && (value == 0 || (value >= 4 && value <= 8))) g_groupbh = value;
}

static size_t round32(int in) { return ((size_t)in + 31) / 32 * 32; }

// k per block: all of k unless the activations exceed 1 MiB (then whole 32-blocks of it), as the
// AVX2 kernels block.
static size_t kc512(int n, int in) {
    size_t kc = ((size_t)1 << 20) / ((size_t)n * 4) / 32 * 32;
    if (kc < 256) kc = 256;
    return kc >= (size_t)in ? (size_t)in : kc;
}

size_t ck_avx512_prep_floats(int in, int n) { return (size_t)n * round32(in); }

CK_AVX512 void ck_avx512_stage(ck_dtype dt, int in, const float *x, int ldx, int n, float *xs) {
    int gsize[16], gstart[16];
    const int bf16x = dt == CK_BF16 && ck_bf16_activations();
    const int ngroups = ck_token_groups(n, tokens_per_group(n, bf16x), gsize, gstart);
    const size_t k32 = (size_t)in / 32 * 32, ld = round32(in);
    // Lane indices of the even and odd elements of two 16-float vectors.
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (int g = 0; g < ngroups; g++) {
        const size_t T = (size_t)gsize[g];
        float *base = xs + (size_t)gstart[g] * ld;
        for (size_t t = 0; t < T; t++) {
            const float *src = x + (size_t)(gstart[g] + (int)t) * ldx;
            size_t k = 0;
            if (bf16x) {
                for (; k < k32; k += 32)
                    stage_bf16_block(src + k, (uint16_t *)base + k * T + 32 * t);
                for (; k < (size_t)in; k++) base[k32 * T / 2 + 32 * t + (k - k32)] = ck_bf16_to_f32(ck_f32_to_bf16(src[k]));
                continue;
            }
            for (; k < k32; k += 32) {
                float *dst = base + k * T + 32 * t;
                __m512 a = _mm512_loadu_ps(src + k), b = _mm512_loadu_ps(src + k + 16);
                if (dt == CK_BF16) {
                    __m512 ev = _mm512_permutex2var_ps(a, even, b), od = _mm512_permutex2var_ps(a, odd, b);
                    a = ev;
                    b = od;
                }
                _mm512_storeu_ps(dst, a);
                _mm512_storeu_ps(dst + 16, b);
            }
            for (; k < (size_t)in; k++) base[k32 * T + 32 * t + (k - k32)] = src[k];
        }
    }
}

int ck_avx512_range(ck_dtype dt, const void *W, int in, const float *xs, size_t xld, int n, float *y,
                    size_t ldy, int o0, int o1, ck_scratch *s) {
    int gsize[16], gstart[16];
    const int bf16x = dt == CK_BF16 && ck_bf16_activations();
    const int ngroups = ck_token_groups(n, tokens_per_group(n, bf16x), gsize, gstart);
    const size_t es = ck_dt_size(dt), kc = kc512(n, in), k32all = (size_t)in / 32 * 32;
    float *vacc = NULL;
    if (kc < (size_t)in) {
        if (!(vacc = ck_buf_reserve(&s->cs, (size_t)(g_rb / 3 + 1) * (size_t)ngroups * CK_TILE_FLOATS))) return -1;
    }
    const int rb = kc == (size_t)in ? o1 - o0 : g_rb;
    const int share = bf16x && g_pfshare && ngroups > 1 && kc == (size_t)in;
    for (int ob = o0; ob < o1; ob += rb) {
        const int oe = ob + rb < o1 ? ob + rb : o1;
        for (size_t kb = 0; kb < (size_t)in; kb += kc) {
            const size_t ke = kb + kc < (size_t)in ? kb + kc : (size_t)in;
            const int last = ke == (size_t)in;
            const size_t k32 = ke < k32all ? ke : k32all;
            int ti = 0;
            const int R = rows_for512(gsize[0]);
            for (int o = ob; o < oe; o += R, ti++) {
                const int r = oe - o < R ? oe - o : R;
                // Where the next tile reads, relative to this one (as the AVX2 small_range).
                ptrdiff_t pf;
                if (o + R < oe) pf = (ptrdiff_t)((size_t)R * in * es);
                else if (!last) pf = (ptrdiff_t)(kc * es) - (ptrdiff_t)((size_t)(o - ob) * in * es);
                else pf = (ptrdiff_t)((size_t)R * in * es) - (ptrdiff_t)(kb * es);
                for (int g = 0; g < ngroups; g++) {
                    float *va = vacc ? vacc + ((size_t)ti * ngroups + g) * CK_TILE_FLOATS : NULL;
                    (bf16x ? dbh_table : d512_table[dt])[gsize[g] - 1][r - 1](W, (size_t)in, o, xs + (size_t)gstart[g] * xld, kb, k32,
                                                                            ke, va, kb == 0, last, y + (size_t)gstart[g] * ldy,
                                                                            ldy, share ? pf : g == 0 ? pf : 0, share ? g : 0, share ? ngroups : 1);
                }
            }
        }
    }
    return 0;
}

#else // !CK_X86: level 2 is never selected

void ck_avx512_tune(const char *key, int value) { (void)key; (void)value; }
size_t ck_avx512_prep_floats(int in, int n) { (void)in; (void)n; return 0; }
void ck_avx512_stage(ck_dtype dt, int in, const float *x, int ldx, int n, float *xs) {
    (void)dt; (void)in; (void)x; (void)ldx; (void)n; (void)xs;
}
int ck_avx512_range(ck_dtype dt, const void *W, int in, const float *xs, size_t xld, int n, float *y,
                    size_t ldy, int o0, int o1, ck_scratch *s) {
    (void)dt; (void)W; (void)in; (void)xs; (void)xld; (void)n; (void)y; (void)ldy; (void)o0; (void)o1; (void)s;
    return -1;
}
#endif
