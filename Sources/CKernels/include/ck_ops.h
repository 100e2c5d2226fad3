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

/// Causal grouped-query attention for one query position over cached keys/values 0..<len.
/// q: (heads, headDim); K, V: (len, kvStride) with head g at columns g*headDim (kvStride =
/// kvHeads*headDim); out: (heads, headDim); scratch: at least len floats. Query head h reads
/// KV head h / (heads / kvHeads). Scores are scaled by 1/sqrt(headDim), softmax in f32.
void ck_attention(const float *q, int heads, int kvHeads, int headDim,
                  const float *K, const float *V, int kvStride, int len,
                  float *out, float *scratch);

/// Index of the largest of count values (the first one on ties).
int ck_argmax(const float *x, int count);

#ifdef __cplusplus
}
#endif
#endif
