// Element-wise and attention kernels of the Llama forward pass. Activations are f32, row-major.
// (Matrix products are in ckernels.h.)
#ifndef CK_OPS_H
#define CK_OPS_H

#include <stddef.h>
#include "ckernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/// RMSNorm of n rows: out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, as Hugging Face's
/// LlamaRMSNorm in float32. x, out: (n, dim); weight: (dim) in dtype wdt. out may alias x.
void ck_rmsnorm(const float *x, const void *weight, ck_dtype wdt, float eps, int dim, int n, float *out);

/// Rotary embedding in the "rotate half" layout Hugging Face uses: for each head, element i pairs
/// with i + headDim/2. v: (heads, headDim) for one position; cos, sin: (headDim/2) for that position.
void ck_rope(float *v, int heads, int headDim, const float *cos, const float *sin);

/// gate[i] = silu(gate[i]) * up[i]  (SwiGLU), count elements.
void ck_silu_mul(float *gate, const float *up, size_t count);

/// y[i] += x[i] (the residual connection), count elements.
void ck_add(float *y, const float *x, size_t count);

/// One query row of ck_attention_rows. Layouts: q and out (heads, headDim); K and V (len, kvStride)
/// with KV head g at columns g*headDim (kvStride = kvHeads*headDim), positions 0..<len.
typedef struct {
    const float *q;   // the row's queries, RoPE applied
    const float *K;   // the cached keys of positions 0..<len, RoPE applied
    const float *V;   // the cached values of positions 0..<len
    int len;          // positions attended: the row's position + 1 (causal)
    float *out;       // the attention output
} ck_attention_row;

/// Causal grouped-query attention of n query rows; query head h reads KV head h / (heads / kvHeads).
/// The (row, head) pairs are independent and split over the thread pool (ck_parallel) when the
/// work is large enough; each pair's arithmetic is fixed, so a row's output never depends on the
/// other rows of the call, on n or on the thread count. For one (row, head), with d = headDim and
/// scale = 1/sqrt(d) in f32, positions are taken in chunks of CK_ATTENTION_CHUNK (online softmax):
///   s_t = dot(q, k_t) * scale, the dot as 8 partial sums (lane j sums i = j mod 8 in ascending i;
///         a fused multiply-add on the AVX2 kernels, multiply then add on the scalar ones) folded
///         ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7));
///   per chunk: m' = max(m, s_t of the chunk); if m' > m, l *= expf(m - m') and acc[i] *= the same
///         (m starts at -inf, l and acc at 0); then for t ascending e_t = expf(s_t - m'),
///         l += e_t, acc[i] += e_t * v_t[i] (fused on AVX2);
///   out[i] = acc[i] * (1 / l).
/// acc lives in out, so nothing is allocated. The AVX2 kernels need d % 8 == 0 (otherwise the
/// scalar ones run); the kernel set is ck_simd_level's, fixed for a process.
void ck_attention_rows(const ck_attention_row *rows, int n, int heads, int kvHeads, int headDim, int kvStride);
#define CK_ATTENTION_CHUNK 128

/// Index of the largest of count values (the first one on ties): the index the loop
/// `best = 0; for i in 1..<count: if x[i] > x[best] { best = i }` ends with, so NaNs never win
/// except a NaN at x[0], and -0 and +0 tie. count >= 1.
int ck_argmax(const float *x, int count);

#ifdef __cplusplus
}
#endif
#endif
