// 8-bit weight copies for speculative drafting. A draft only has to *propose* tokens — the full
// model verifies them with the exact weights — so the draft may read a cheaper copy of a matrix:
// half the bytes of bf16, and decode is memory-bound.
#ifndef CK_Q8_H
#define CK_Q8_H
#include <stddef.h>
#include <stdint.h>
#include "ckernels.h"
#ifdef __cplusplus
extern "C" {
#endif

/// Symmetric per-row quantisation: scales[r] = max_k |W[r,k]| / 127, Q[r,k] = round(W[r,k] / scales[r]).
/// W: (rows, cols) in dtype dt; Q: (rows, cols) int8; scales: (rows) f32. Rows [r0, r1) only.
void ck_q8_quantize_rows(ck_dtype dt, const void *W, int cols, int8_t *Q, float *scales, int r0, int r1);

/// Activations are quantised in blocks of this many elements along k. 256 int16 times int8 sum to
/// at most 256 * 127 * 32767 < 2^31, so a block's dot product is exact in int32.
#define CK_Q8_XBLOCK 256

/// y[t*ldy + o] = scales[o] * sum_b d[t,b] * sum_{k in block b} xq[t,k] * Q[o*in + k] for t < n,
/// o < out: the product of x with Q's rows, where row t of x is first quantised to int16 in blocks
/// of CK_Q8_XBLOCK (d[t,b] = max_{k in b} |x[t,k]| / 32767, xq = round-to-nearest-even(x / d), zero
/// past `in`), so every block is an exact integer dot product. Accumulation across blocks is f32, in
/// the order of the kernel set (q8.c: per block the integer lane sums, 8 lanes on AVX2 and 16 on
/// AVX-512, converted to f32 and scaled by d[t,b] into one accumulator, a partial last block in
/// scalar code), which a process keeps throughout.
/// The rows are split across the kernel thread pool. That holds for n <= ck_matmul_row_independent_max()
/// (every n on the scalar kernels), where row t is bit-identical to a one-row call. For larger n
/// (prefill) the AVX2 kernels compute instead y[t*ldy + o] = sum_k x[t,k] * w[o,k] with
/// w[o,k] = (float)Q[o*in + k] * scales[o] (rounded once) and f32 activations, one fused multiply-add
/// per k in k order (ck_matmul's GEMM path): row t then depends on n and t alone, as ck_matmul's does.
void ck_matmul_q8(const int8_t *Q, const float *scales, int out, int in, const float *x, int ldx, int n,
                  float *y, int ldy);
#ifdef __cplusplus
}
#endif
#endif
