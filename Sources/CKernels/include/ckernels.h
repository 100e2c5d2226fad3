// The numeric kernels of the engine, in one place. Every matrix is row-major.
// Weights stay in their stored dtype; activations are f32; accumulation is f32.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Storage type of a weight matrix (as in the safetensors header).
/// CK_I8 (int8 with one f32 scale per row) and CK_Q4 (4-bit blocks of 32 with an f16 scale each)
/// are not safetensors dtypes: only ck_matmul_q8 (ck_q8.h) and ck_matmul_q4 (ck_q4.h) pass them,
/// internally; ck_matmul and the conversions take the other three.
typedef enum { CK_F32 = 0, CK_F16 = 1, CK_BF16 = 2, CK_I8 = 3, CK_Q4 = 4 } ck_dtype;

// ---- CPU features and threads -------------------------------------------------------------

/// The kernel set in use: 2 when the CPU also has AVX-512 F/BW/VL/DQ and is an AMD one, or
/// CK_AVX512=1 is set (the small-n dot products of ck_matmul then use zmm registers: kern_avx512.c;
/// everything else stays on AVX2), 1 for the AVX2+FMA+F16C kernels, 0 for the portable scalar
/// ones. Detected at run time (the library is built for baseline x86-64); the environment
/// variable CK_FORCE_SCALAR=1 forces 0 and CK_AVX512=0 at most 1, for the whole process.
int ck_simd_level(void);
/// Human-readable name of the kernel set in use ("avx512-avx2-fma-f16c", "avx2-fma-f16c" or "scalar").
const char *ck_simd_name(void);
/// Forces the scalar kernels (tests compare both paths). 0 = auto, 1 = force scalar.
void ck_force_scalar(int on);
/// Forces level 1 on an AVX-512 CPU (tests compare the two). 0 = auto, 1 = at most AVX2.
void ck_force_avx2(int on);
/// bf16 activations (opt-in, off by default): at simd level 2 on a CPU with AVX512_BF16, the
/// small-n products of ck_matmul with bf16 weights round each activation to bf16 (nearest even)
/// and use the bf16 dot-product instruction, which does twice the multiply-adds of an f32 FMA per
/// instruction — the numerics llama.cpp uses for bf16 models. The output then differs from the
/// f32-activation result by about 2^-9 of sum |x·w|, so it no longer matches Hugging Face's
/// float32 reference; rows stay independent of n, of the tiles and of the thread count, so
/// self-speculation stays exactly the decoding of these numerics. ck_matmul then cuts a call of
/// more rows than the small path takes (a prefill) into calls of it, so every row of every n is
/// the one-row result (ck_matmul_range alone keeps the f32 GEMM for such n). The environment variable
/// CK_BF16_ACTIVATIONS=1 asks for it at start-up; this call switches it (tests). Returns whether
/// it is in effect (asked for, and the CPU and kernel set have it).
int ck_set_bf16_activations(int on);
int ck_bf16_activations(void);
/// Whether this CPU and the kernel set in use (ck_simd_level) can run bf16 activations.
int ck_bf16_activations_available(void);
/// Threads used by ck_matmul (the calling thread counts as one). Default: online CPUs (fewer if
/// the process's CPU affinity allows fewer). n < 1 restores the default. The pool's workers are
/// created lazily, spin for ~200 us after each call (environment CK_SPIN_US overrides) and then
/// block, so an idle process uses no CPU. Lowering the count joins the extra workers.
void ck_set_threads(int n);
int ck_get_threads(void);
/// Runs fn(ctx, tid, nthreads) for every tid in [0, nthreads) on the kernel thread pool (the caller
/// runs tid 0) and returns when all have finished; nthreads = ck_get_threads(). Calls are serialised
/// with ck_matmul; a call made from inside such a task runs fn(ctx, 0, 1) on the calling thread.
void ck_parallel(void (*fn)(void *ctx, int tid, int nthreads), void *ctx);

// ---- Matrix products -----------------------------------------------------------------------

/// y[t*ldy + o] = sum_k x[t*ldx + k] * W[o*in + k]   for t < n, o < out.
/// W: (out, in) in dtype `dt`; x: (n, ldx) f32; y: (n, ldy) f32. Weights are read once for all n
/// rows of x (a multi-position pass costs about one weight read, not n). Uses the thread pool
/// (output rows split in chunks of 24); no allocation once its scratch buffers have grown.
/// Alignment: W needs only its element alignment (2 bytes for f16/bf16, 4 for f32), x and y their
/// float alignment; ldx/ldy are arbitrary (>= in / >= out). Only y[t*ldy + o] for o < out is
/// written. Accumulation is f32 (fused multiply-add). The summation order never depends on the
/// thread count, and for n <= 40 (every n on the scalar kernels) not on n either: row t of a
/// multi-token verification pass is bit-identical to a one-token call on x row t. Larger n
/// (prefill) uses a differently ordered GEMM kernel, equal up to f32 rounding. The order does
/// depend on the kernel set (ck_simd_level: 8-lane AVX2 or 16-lane AVX-512 partial sums, stated in
/// kern_avx2.c and kern_avx512.c), which is fixed for a process.
/// Calls from several threads are safe; concurrent calls serialise on a mutex. A call made from
/// inside a ck_parallel task runs on the calling thread only.
void ck_matmul(ck_dtype dt, const void *W, int out, int in,
               const float *x, int ldx, int n, float *y, int ldy);

/// The largest n for which ck_matmul's row t is bit-identical to a one-row call on x row t (the
/// dot-product kernels; every n on the scalar kernels). Above it, row t of an n-row call depends on
/// n and t alone: two n-row calls with the same x row t give the same y row t. The engine's
/// multi-sequence pass forms its calls by this rule, so that a sequence's numbers never depend on
/// the sequences it shares a pass with.
int ck_matmul_row_independent_max(void);

/// Same as ck_matmul restricted to output rows [o0, o1), single-threaded (the building block).
/// Uses per-thread scratch only, so it may be called concurrently from several threads.
void ck_matmul_range(ck_dtype dt, const void *W, int out, int in,
                     const float *x, int ldx, int n, float *y, int ldy, int o0, int o1);

/// dst[i] = (float)src[i] for i < count (one embedding row, say).
void ck_to_f32(ck_dtype dt, const void *src, float *dst, size_t count);

/// dst[i] = round-to-nearest-even bf16 / IEEE half of src[i] (for writing weights). f16: subnormals,
/// overflow to +-inf (|x| >= 65520), inf and NaN as IEEE 754 (F16C when available, bit-identical
/// scalar fallback); NaNs stay (quiet) NaNs in both formats.
void ck_from_f32(ck_dtype dt, const float *src, void *dst, size_t count);

#ifdef __cplusplus
}
#endif
#endif
