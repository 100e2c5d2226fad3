// 4-bit weights: a quarter of bf16's bytes (plus one f16 scale per 32 weights), for a whole model
// (`--weights q4`) or for speculative drafts over int8 or 16-bit verification. Decode streams
// every weight once per token, so bytes are time.
#ifndef CK_Q4_H
#define CK_Q4_H
#include <stddef.h>
#include <stdint.h>
#include "ckernels.h"
#ifdef __cplusplus
extern "C" {
#endif

/// Weights per block (one f16 scale each) and per group of packed bytes (two blocks).
#define CK_Q4_BLOCK 32
#define CK_Q4_GROUP 64
#define CK_Q4_GROUP_BYTES 32

/// Layout of a (rows, cols) matrix, nb = ceil(cols / 32) blocks and ng = ceil(cols / 64) groups a row:
///   Q: (rows, ng * 32) bytes. Byte j < 32 of group g holds W[r, 64g + j] in its low nibble and
///      W[r, 64g + 32 + j] in its high nibble: one 32-byte load and two masks give two blocks'
///      32 values each, in order (llama.cpp's Q4_0 interleaves the halves of one block instead,
///      which costs a lane insert per block). Rows are 32-byte multiples and stream on their own.
///   d: (rows, nb) IEEE half, d[r, b] the scale of elements 32b..32b+31.
///   W[r, k] = d[r, k / 32] * (nibble - 8); elements past cols are nibble 8 (zero).
/// Quantisation of one block x_0..x_31 (the stored weights as f32; x_i = 0 past cols), with
/// h(v) = v rounded to the nearest-even f16 (saturated to +-65504) and back to f32, and
/// q_i(d) = clamp(rint(x_i / d) + 8, 0, 15) in f32 arithmetic (rint: to nearest even):
///   m = the x_i of largest magnitude (the first of equals). d1 = h(m / -8); if d1 == 0 (an all-zero
///   or underflowing block) the block is d = 0 and every nibble 8. Else the least-squares scale for
///   q(d1)'s integers, d2 = h(S_xq / S_qq) with S_xq = sum_i x_i (q_i(d1) - 8), S_qq = sum_i
///   (q_i(d1) - 8)^2, is a second candidate when it is finite and non-zero; the block keeps the
///   candidate with the smaller E(d) = sum_i (x_i - d (q_i(d) - 8))^2 (d1 on ties). d1 alone is
///   llama.cpp's Q4_0 rule; d2 lowers its error (never raises it). Every term is rounded to f32
///   on its own (no fused multiply-add), and each sum of 32 terms t_i is taken in the order of
///   eight vector lanes: s_j = ((t_j + t_j+8) + t_j+16) + t_j+24 for j < 8, then
///   ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)). The scalar and AVX2 quantisers follow it
///   alike, so a folder's bytes do not depend on the machine that wrote it.
/// Rows [r0, r1) only; Q and d are indexed by absolute row.
void ck_q4_quantize_rows(ck_dtype dt, const void *W, int cols, uint8_t *Q, uint16_t *d, int r0, int r1);

/// W[r, k] = d[r, k / 32] * (nibble - 8) for k < cols, rows [r0, r1) (indexed by absolute row, as
/// above), into W: (rows, cols) f32. Exact (an f16 times a small integer).
void ck_q4_dequantize_rows(const uint8_t *Q, const uint16_t *d, int cols, float *W, int r0, int r1);

/// y[t*ldy + o] = sum_b (float)dot(t, o, b) * (d[o, b] * xd[t, b]) for t < n, o < out, where row t of
/// x is first quantised to int8 in blocks of 32: xd[t, b] = max |x| / 127 over the block (f32),
/// xq = rint(x * (127 / max)) (f32, to nearest even; 0 past `in` and for an all-zero block, whose
/// xd is 0), and dot(t, o, b) = sum over the block of (nibble - 8) * xq, an exact integer. Eight
/// bits suffice here where the int8 kernel keeps sixteen: the activations' relative error (2^-8 of
/// the block's largest) is a sixteenth of the 4-bit weights' own, and the byte products halve the
/// instructions a block costs (u8 x s8 pair products, exact in int16). The product d * xd is one
/// f32 multiply; accumulation across blocks is f32 in an order that depends on neither n, t nor
/// the thread count. That holds for n <= ck_matmul_row_independent_max() (every n on the scalar
/// kernels): row t is bit-identical to a one-row call. For larger n (prefill) the AVX2 kernels
/// compute instead y[t*ldy + o] = sum_k x[t,k] * w[o,k] with w = d * (nibble - 8) (exact in f32:
/// an 11-bit significand times a 4-bit integer) and f32 activations, through ck_matmul's GEMM
/// path: row t then depends on n and t alone, as ck_matmul's does.
/// Threads split the output rows (the kernel thread pool).
void ck_matmul_q4(const uint8_t *Q, const uint16_t *d, int out, int in, const float *x, int ldx, int n,
                  float *y, int ldy);
#ifdef __cplusplus
}
#endif
#endif
