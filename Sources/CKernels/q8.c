// int8 weight kernels (see ck_q8.h): per-row symmetric weight scales; activations quantised to
// int16 in blocks of CK_Q8_XBLOCK, so each block's product is an exact integer dot product.
#include "ck_q8.h"
#include "ck_internal.h"
#include <math.h>
#include <stdio.h>
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
    if (!row) { fprintf(stderr, "ck_q8_quantize_rows: out of memory\n"); abort(); } // Q would stay unwritten
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

/// Activation rows quantised per block: xq (n, nb * 32) int16 (zero past `in`), xd (n, nb) f32.
typedef struct { int16_t *xq; float *xd; int nb; } q8_activations;

#if Q8_X86
/// One whole block as the scalar loop below quantises it, 8 lanes at a time: the maximum is
/// order-free (vmaxps keeps its second operand when the first is NaN, as the scalar `>` skips it),
/// and vcvtps2dq rounds to nearest even as lrintf does; the values lie within +-32767, so the
/// saturating pack is the scalar cast.
CK_AVX2 static void quantize_block_avx2(const float *x, int16_t *q, float *d) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < CK_Q8_XBLOCK; k += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), m);
    const float mAbs = ck_hmax256(m);
    const __m256 inv = _mm256_set1_ps(mAbs > 0 ? 32767.0f / mAbs : 0);
    *d = mAbs / 32767.0f;
    for (int k = 0; k < CK_Q8_XBLOCK; k += 16) {
        const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv));
        const __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), inv));
        _mm256_storeu_si256((__m256i *)(q + k), _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xd8));
    }
}
#endif

static void quantize_activations(const float *x, int ldx, int n, int in, q8_activations *a) {
    const int nb = a->nb;
    const int vector = Q8_X86 && ck_simd_level() > 0;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        int16_t *q = a->xq + (size_t)t * nb * CK_Q8_XBLOCK;
        for (int b = 0; b < nb; b++) {
            const int k0 = b * CK_Q8_XBLOCK, k1 = k0 + CK_Q8_XBLOCK < in ? k0 + CK_Q8_XBLOCK : in;
#if Q8_X86
            if (vector && k1 - k0 == CK_Q8_XBLOCK) {
                quantize_block_avx2(xt + k0, q + k0, &a->xd[(size_t)t * nb + b]);
                continue;
            }
#endif
            float mAbs = 0;
            for (int k = k0; k < k1; k++) if (fabsf(xt[k]) > mAbs) mAbs = fabsf(xt[k]);
            const float inv = mAbs > 0 ? 32767.0f / mAbs : 0;
            a->xd[(size_t)t * nb + b] = mAbs / 32767.0f;
            for (int k = k0; k < k0 + CK_Q8_XBLOCK; k++) q[k] = k < k1 ? (int16_t)lrintf(xt[k] * inv) : 0;
        }
    }
}

/// Sum over blocks [b0, nb) of d_x[b] * (integer dot product of the block), one row of weights.
static float row_blocks_scalar(const int8_t *q, int in, const int16_t *xq, const float *xd, int b0, int nb) {
    float acc = 0;
    for (int b = b0; b < nb; b++) {
        const int k0 = b * CK_Q8_XBLOCK, k1 = k0 + CK_Q8_XBLOCK < in ? k0 + CK_Q8_XBLOCK : in;
        int32_t dot = 0;
        for (int k = k0; k < k1; k++) dot += (int32_t)q[k] * xq[k];
        acc += (float)dot * xd[b];
    }
    return acc;
}

#if Q8_X86
#define Q8_AVX2 CK_AVX2
#define CK_INLINE_Q8 static inline __attribute__((always_inline))
#endif

/// The order the rows' blocks are summed in, shared by every kernel set. Per (weight row o,
/// activation row t) one f32 accumulator (8 lanes on AVX2, 16 on AVX-512, 1 in scalar code) takes
/// the blocks in block order; only the interleaving of different (o, t) changes, so every result
/// is the same bit for bit whatever the chunking. Where a tile's int16 activations outgrow L1
/// (the 8192-wide rows of the MLP's down projection: 16 KiB per activation row), the weights are
/// walked in chunks of k: CK_Q8_CHUNK_ROWS rows at a time, chunk by chunk, the accumulators kept
/// in `acc` between chunks, so a tile's activations for one chunk (at most CK_Q8_L1_X bytes) stay
/// in L1 while they meet every row of the group. Otherwise rows go one at a time in memory order
/// (one chunk), the sequential stream the hardware prefetchers follow best. Measured on a 2-core
/// Zen 4 (8 layers of the 1B shapes + the head, the one-chunk walk and this one interleaved in one
/// process, 3 x 11 rounds): the down projection 0.67-0.84x its time at 2 rows and 0.65-0.69x at 4,
/// all of it 0.91x at 2 rows and 0.91-0.92x at 4, unchanged at 1 and 8 rows (the AVX2 form on the
/// same CPU: unchanged). 16 KiB chunks of 8 rows measured best against 8 or 24 KiB and 2 or 4 rows.
#define CK_Q8_CHUNK_ROWS 8
#define CK_Q8_L1_X 16384
#define CK_Q8_NMAX 64
static int g_q8_chunk = 1;  // CK_TUNE=q8chunk=0: one row at a time over the whole of k (the former order)
int ck_q8_tune(const char *key, int value) {
    if (strcmp(key, "q8chunk")) return 0;
    g_q8_chunk = value != 0;
    return 1;
}

/// One walk over rows [o0, o1) of a matrix, as q8_walk orders it.
typedef struct {
    const int8_t *Q;
    const float *scales;
    int in, full;             // full: whole blocks per row (a partial last block is summed by the finish)
    const q8_activations *a;
    int n;                    // activation rows
    float *y;
    int ldy, o1;
    int chunked, cb, chunks;  // blocks per chunk, chunks per row (>= 1)
    int ahead, prefetch;      // prefetch distance: in segments of the walk, and in bytes (0: none)
    float *acc;               // chunked: (CK_Q8_CHUNK_ROWS, n, lanes) f32 partial sums of the group's rows
} q8_walk_t;
/// Chunk c of rows [g, g + rows): tiles of activation rows over blocks [c·cb, (c+1)·cb), the
/// accumulators zeroed at the first chunk and finished (summed, scaled, stored in y) at the last.
typedef void (*q8_pass_fn)(const q8_walk_t *w, int g, int rows, int c);

/// Where the prefetch for segment (row g + r, chunk c) points: `prefetch` bytes ahead in memory
/// order when rows go one at a time, else the segment `ahead` places later in the walk (in this
/// group or the next); NULL past the end.
static inline const char *q8_prefetch_at(const q8_walk_t *w, int g, int rows, int c, int r) {
    if (!w->prefetch) return NULL;
    if (!w->chunked) return (const char *)(w->Q + (size_t)(g + r) * w->in) + w->prefetch;
    int j = c * rows + r + w->ahead, row, chunk;
    if (j < w->chunks * rows) {
        row = g + j % rows;
        chunk = j / rows;
    } else {
        j -= w->chunks * rows;
        row = g + rows + j % CK_Q8_CHUNK_ROWS;
        chunk = j / CK_Q8_CHUNK_ROWS;
    }
    if (row >= w->o1 || chunk >= w->chunks) return NULL;
    return (const char *)(w->Q + (size_t)row * w->in + (size_t)chunk * w->cb * CK_Q8_XBLOCK);
}

/// Rows [o0, o1) in the order above: `pass` the kernel set's chunk pass, `tile` activation rows
/// per pass over a segment, `lanes` floats per accumulator, `prefetch` bytes ahead in the walk.
static void q8_walk(q8_pass_fn pass, int tile, int lanes, int prefetch, const int8_t *Q, const float *scales, int in,
                    const q8_activations *a, int n, float *y, int ldy, int o0, int o1) {
    const int slice = CK_Q8_NMAX * 16 / lanes;
    if (n > slice) {
        // More activation rows than `acc` holds for a group (scalar prefill): in slices of rows,
        // which changes nothing, as every (o, t) has its own accumulator.
        for (int t0 = 0; t0 < n; t0 += slice) {
            const q8_activations part = {a->xq + (size_t)t0 * a->nb * CK_Q8_XBLOCK, a->xd + (size_t)t0 * a->nb, a->nb};
            q8_walk(pass, tile, lanes, prefetch, Q, scales, in, &part, n - t0 < slice ? n - t0 : slice, y + (size_t)t0 * ldy,
                    ldy, o0, o1);
        }
        return;
    }
    _Alignas(64) float acc[CK_Q8_CHUNK_ROWS * CK_Q8_NMAX * 16];
    q8_walk_t w = {Q, scales, in, in / CK_Q8_XBLOCK, a, n, y, ldy, o1, 0, 0, 1, 0, prefetch, acc};
    int cb = CK_Q8_L1_X / ((n < tile ? n : tile) * CK_Q8_XBLOCK * (int)sizeof(int16_t));
    if (cb < 1) cb = 1;
    w.chunked = g_q8_chunk && w.full > cb;
    w.cb = w.chunked ? cb : w.full > 0 ? w.full : 1;
    w.chunks = (w.full + w.cb - 1) / w.cb;
    if (w.chunks < 1) w.chunks = 1;
    w.ahead = (prefetch + w.cb * CK_Q8_XBLOCK - 1) / (w.cb * CK_Q8_XBLOCK);
    if (!w.chunked) {
        pass(&w, o0, o1 - o0, 0);
        return;
    }
    for (int g = o0; g < o1; g += CK_Q8_CHUNK_ROWS) {
        const int rows = o1 - g < CK_Q8_CHUNK_ROWS ? o1 - g : CK_Q8_CHUNK_ROWS;
        for (int c = 0; c < w.chunks; c++) pass(&w, g, rows, c);
    }
}

/// The blocks of chunk c: [b0, b1).
static inline void q8_chunk_blocks(const q8_walk_t *w, int c, int *b0, int *b1) {
    *b0 = c * w->cb;
    *b1 = *b0 + w->cb < w->full ? *b0 + w->cb : w->full;
}

/// y[t, o] from the sum s of row o's whole blocks for activation row t: plus the partial last
/// block (if any), times the row's scale.
static inline void q8_store(const q8_walk_t *w, const int8_t *q, int o, int t, float s) {
    const int nb = w->a->nb;
    if (w->full < nb)
        s += row_blocks_scalar(q, w->in, w->a->xq + (size_t)t * nb * CK_Q8_XBLOCK, w->a->xd + (size_t)t * nb, w->full, nb);
    w->y[(size_t)t * w->ldy + o] = s * w->scales[o];
}

static void q8_pass_scalar(const q8_walk_t *w, int g, int rows, int c) {
    const int nb = w->a->nb;
    int b0, b1;
    q8_chunk_blocks(w, c, &b0, &b1);
    for (int r = 0; r < rows; r++) {
        const int o = g + r;
        const int8_t *q = w->Q + (size_t)o * w->in;
        float *acc = w->acc + (size_t)(w->chunked ? r : 0) * w->n;
        for (int t = 0; t < w->n; t++) {
            const int16_t *xq = w->a->xq + (size_t)t * nb * CK_Q8_XBLOCK;
            float f = c == 0 ? 0 : acc[t];
            for (int b = b0; b < b1; b++) {
                int32_t dot = 0;
                for (int k = b * CK_Q8_XBLOCK; k < (b + 1) * CK_Q8_XBLOCK; k++) dot += (int32_t)q[k] * xq[k];
                f += (float)dot * w->a->xd[(size_t)t * nb + b];
            }
            if (c == w->chunks - 1) q8_store(w, q, o, t, f);
            else acc[t] = f;
        }
    }
}

/// A kernel set's chunk pass (q8_pass_fn) over its tile function TILE_FN: every row of the group,
/// activation rows in tiles of TILE (the last tile holding the rest; T a constant in each call, so
/// every tile's loops unroll), only the first tile prefetching; LANES floats per accumulator. A
/// whole row in one chunk calls the tile with constant flags, so its accumulators never leave
/// registers.
#define Q8_TILE_CALL(TILE_FN, TILE, T, FIRST, LAST)                                                \
    switch (T) {                                                                                 \
    case 1: TILE_FN(w, q, o, t, 1, b0, b1, FIRST, LAST, acc + lanes * t, p); break;              \
    case 2: TILE_FN(w, q, o, t, 2, b0, b1, FIRST, LAST, acc + lanes * t, p); break;              \
    case 3: TILE_FN(w, q, o, t, 3 < TILE ? 3 : TILE, b0, b1, FIRST, LAST, acc + lanes * t, p); break; \
    default: TILE_FN(w, q, o, t, TILE, b0, b1, FIRST, LAST, acc + lanes * t, p); break;           \
    }
#define Q8_PASS(NAME, ATTR, TILE_FN, TILE, LANES)                                                  \
    ATTR static void NAME(const q8_walk_t *w, int g, int rows, int c) {                          \
        const int lanes = LANES;                                                                 \
        int b0, b1;                                                                              \
        q8_chunk_blocks(w, c, &b0, &b1);                                                         \
        const int first = c == 0, last = c == w->chunks - 1;                                     \
        for (int r = 0; r < rows; r++) {                                                         \
            const int o = g + r;                                                                 \
            const int8_t *q = w->Q + (size_t)o * w->in;                                          \
            const char *pf = q8_prefetch_at(w, g, rows, c, r);                                   \
            float *acc = w->acc + (size_t)(w->chunked ? r : 0) * w->n * lanes;                   \
            for (int t = 0; t < w->n; t += TILE) {                                               \
                const char *p = t == 0 ? pf : NULL;                                              \
                const int T = w->n - t < TILE ? w->n - t : TILE;                                 \
                if (first && last) {                                                             \
                    Q8_TILE_CALL(TILE_FN, TILE, T, 1, 1)                                         \
                } else {                                                                         \
                    Q8_TILE_CALL(TILE_FN, TILE, T, first, last)                                  \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

#if Q8_X86
/// Each block of CK_Q8_XBLOCK (256) is an exact integer dot product: the weights widened to int16
/// and multiplied pairwise with the int16 activations into int32 lanes, summed in integers over the
/// block (|lane| <= 32 * 127 * 32767 < 2^31 on AVX2, half that on AVX-512), then converted to f32
/// (rounded to nearest where a lane exceeds 2^24) and scaled by d_x into one f32 accumulator per
/// (row, activation row) with one fused multiply-add per block, in block order. int16 activations
/// keep the numerics close to f32 activations (relative error 2^-16 of the block's largest), which
/// keeps a draft's acceptance; the block of 256 rather than 32 is what makes the kernel cheap: per
/// 32 weights an activation row costs one multiply-add into integers (vpmaddwd + vpaddd)
/// instead of a multiply, a conversion and an f32 fused multiply-add, so a few rows at once no
/// longer make it bound by its vector instructions. Rows are walked as q8_walk says (one at a
/// time in memory order, except in chunks where the activations outgrow L1: measured on a 2-core
/// Zen 3, one sequential stream read 25-30 GB/s against 21-23 GB/s for 4-row tiles on the
/// 128256 x 2048 head), with a software prefetch CK_Q8_PREFETCH bytes ahead in that walk.
/// Activation rows go in tiles of up to CK_Q8_TILE, which share each widened weight vector; the
/// segment is re-read from L1 for every tile. A partial last block is summed in scalar code
/// (row_blocks_scalar) and added after the horizontal sum (ck_hsum256 / ck_hsum512).
/// Every (row, activation row) has its own accumulators, so row t is bit-identical to a one-row call.
#define CK_Q8_PREFETCH 2048
#define CK_Q8_TILE 3
CK_INLINE_Q8 Q8_AVX2 void q8_tile(const q8_walk_t *w, const int8_t *q, int o, int t0, const int T, int b0, int b1,
                                   const int first, const int last, float *acc, const char *pf) {
    const int nb = w->a->nb;
    __m256 f[CK_Q8_TILE];
    const int16_t *xq[CK_Q8_TILE];
    const float *xd[CK_Q8_TILE];
    for (int t = 0; t < T; t++) {
        xq[t] = w->a->xq + (size_t)(t0 + t) * nb * CK_Q8_XBLOCK;
        xd[t] = w->a->xd + (size_t)(t0 + t) * nb;
        f[t] = first ? _mm256_setzero_ps() : _mm256_load_ps(acc + 8 * t);
    }
    const int k0 = b0 * CK_Q8_XBLOCK;
    for (int b = b0; b < b1; b++) {
        __m256i s0[CK_Q8_TILE], s1[CK_Q8_TILE];
        for (int t = 0; t < T; t++) s0[t] = s1[t] = _mm256_setzero_si256();
        for (int k = b * CK_Q8_XBLOCK; k < (b + 1) * CK_Q8_XBLOCK; k += 32) {
            if (pf && !(k & 63)) _mm_prefetch(pf + (k - k0), _MM_HINT_T0);
            const __m256i wl = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + k)));
            const __m256i wh = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + k + 16)));
            for (int t = 0; t < T; t++) {
                s0[t] = _mm256_add_epi32(s0[t], _mm256_madd_epi16(wl, _mm256_loadu_si256((const __m256i *)(xq[t] + k))));
                s1[t] = _mm256_add_epi32(s1[t], _mm256_madd_epi16(wh, _mm256_loadu_si256((const __m256i *)(xq[t] + k + 16))));
            }
        }
        for (int t = 0; t < T; t++)
            f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s0[t], s1[t])), _mm256_set1_ps(xd[t][b]), f[t]);
    }
    if (last) {
        for (int t = 0; t < T; t++) q8_store(w, q, o, t0 + t, ck_hsum256(f[t]));
    } else {
        for (int t = 0; t < T; t++) _mm256_store_ps(acc + 8 * t, f[t]);
    }
}

Q8_PASS(q8_pass_avx2, Q8_AVX2, q8_tile, CK_Q8_TILE, 8)

/// The AVX-512 form (simd level 2), for the same reason as kern_avx512.c: more activation rows per
/// weight read before the vector units, not the weight stream, set the pace. 32 weights are one zmm
/// of int16; per activation row each takes a vpmaddwd into one of four int32 accumulators (the
/// 32-element steps j = 0..3 mod 4 of the block), summed (s0 + s1) + (s2 + s3), then converted and
/// scaled as above; tiles of up to CK_Q8_TILE512 activation rows share each widened weight vector.
/// (AVX512_VNNI's vpdpwssd, multiply and add in one instruction, measured no faster on a Zen 4.)
#define CK_Q8_TILE512 4
// Into L2, 4 KiB ahead: on a 2-core Zen 4 (8 layers of the 1B shapes + the head, 7 rounds against
// the block-of-32 kernel in the same process) n = 1 0.88-0.90x its time, n = 4 0.68x, n = 8
// 0.72-0.77x, against 0.96-1.02x, 0.78-0.84x and 0.80-0.88x with CK_Q8_PREFETCH into L1.
#define CK_Q8_PREFETCH512 4096
CK_INLINE_Q8 CK_AVX512 void q8_tile512(const q8_walk_t *w, const int8_t *q, int o, int t0, const int T, int b0, int b1,
                                       const int first, const int last, float *acc, const char *pf) {
    const int nb = w->a->nb;
    __m512 f[CK_Q8_TILE512];
    const int16_t *xq[CK_Q8_TILE512];
    const float *xd[CK_Q8_TILE512];
    for (int t = 0; t < T; t++) {
        xq[t] = w->a->xq + (size_t)(t0 + t) * nb * CK_Q8_XBLOCK;
        xd[t] = w->a->xd + (size_t)(t0 + t) * nb;
        f[t] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + 16 * t);
    }
    const int k0 = b0 * CK_Q8_XBLOCK;
    for (int b = b0; b < b1; b++) {
        __m512i s[CK_Q8_TILE512][4];
        for (int t = 0; t < T; t++) s[t][0] = s[t][1] = s[t][2] = s[t][3] = _mm512_setzero_si512();
        for (int k = b * CK_Q8_XBLOCK; k < (b + 1) * CK_Q8_XBLOCK; k += 128) {
            if (pf) {
                _mm_prefetch(pf + (k - k0), _MM_HINT_T1);
                _mm_prefetch(pf + (k - k0) + 64, _MM_HINT_T1);
            }
            for (int j = 0; j < 4; j++) {
                const __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + k + 32 * j)));
                for (int t = 0; t < T; t++)
                    s[t][j] = _mm512_add_epi32(s[t][j], _mm512_madd_epi16(wv, _mm512_loadu_si512((const void *)(xq[t] + k + 32 * j))));
            }
        }
        for (int t = 0; t < T; t++) {
            const __m512i p = _mm512_add_epi32(_mm512_add_epi32(s[t][0], s[t][1]), _mm512_add_epi32(s[t][2], s[t][3]));
            f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(xd[t][b]), f[t]);
        }
    }
    if (last) {
        for (int t = 0; t < T; t++) q8_store(w, q, o, t0 + t, ck_hsum512(f[t]));
    } else {
        for (int t = 0; t < T; t++) _mm512_store_ps(acc + 16 * t, f[t]);
    }
}

Q8_PASS(q8_pass512, CK_AVX512, q8_tile512, CK_Q8_TILE512, 16)
#endif

static void q8_rows(const int8_t *Q, const float *scales, int in, const q8_activations *a, int n,
                    float *y, int ldy, int o0, int o1) {
#if Q8_X86
    if (ck_simd_level() > 1) {
        q8_walk(q8_pass512, CK_Q8_TILE512, 16, CK_Q8_PREFETCH512, Q, scales, in, a, n, y, ldy, o0, o1);
        return;
    }
    if (ck_simd_level() > 0) {
        q8_walk(q8_pass_avx2, CK_Q8_TILE, 8, CK_Q8_PREFETCH, Q, scales, in, a, n, y, ldy, o0, o1);
        return;
    }
#endif
    q8_walk(q8_pass_scalar, 1, 1, 0, Q, scales, in, a, n, y, ldy, o0, o1);
}

/// Scratch for the quantised activations: on the stack when small (every decode step), else heap.
/// Running out of memory here is not recoverable by the caller (y would stay unwritten), so it aborts.
#define Q8_STACK_BYTES 65536
static void *q8_scratch(q8_activations *a, int n, int in, char *stack) {
    a->nb = (in + CK_Q8_XBLOCK - 1) / CK_Q8_XBLOCK;
    const size_t dBytes = (size_t)n * a->nb * sizeof(float), qBytes = (size_t)n * a->nb * CK_Q8_XBLOCK * sizeof(int16_t);
    char *heap = NULL;
    if (dBytes + qBytes > Q8_STACK_BYTES && !(heap = malloc(dBytes + qBytes))) {
        fprintf(stderr, "ck_matmul_q8: out of memory for %zu bytes of activations\n", dBytes + qBytes);
        abort();
    }
    char *base = heap ? heap : stack;
    a->xd = (float *)base;
    a->xq = (int16_t *)(base + dBytes);
    return heap;
}

typedef struct {
    const int8_t *Q; const float *scales; int out, in; const q8_activations *a; int n; float *y; int ldy;
} q8_task;

static void q8_run(void *ctx, int tid, int nth) {
    const q8_task *t = (const q8_task *)ctx;
    int o0 = (int)((long)t->out * tid / nth), o1 = (int)((long)t->out * (tid + 1) / nth);
    if (o0 < o1) q8_rows(t->Q, t->scales, t->in, t->a, t->n, t->y, t->ldy, o0, o1);
}

void ck_matmul_q8(const int8_t *Q, const float *scales, int out, int in, const float *x, int ldx, int n,
                  float *y, int ldy) {
    // Prefill: the f32 GEMM over widened weights (see ck_q8.h); the integer kernel re-widens each
    // weight row for every activation row, which is slow for many rows.
    if (n > ck_matmul_row_independent_max() && ck_matmul_scaled(CK_I8, Q, scales, out, in, x, ldx, n, y, ldy) == 0)
        return;
    _Alignas(32) char stack[Q8_STACK_BYTES];
    q8_activations a;
    void *heap = q8_scratch(&a, n, in, stack);
    // Quantised once by the calling thread; the pool's threads share it read-only.
    quantize_activations(x, ldx, n, in, &a);
    q8_task t = {Q, scales, out, in, &a, n, y, ldy};
    ck_parallel(q8_run, &t);
    free(heap);
}
