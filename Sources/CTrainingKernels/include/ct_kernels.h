// Element-wise f32 kernels of the trainer's hot loops, written so the compiler vectorises them
// (an AVX2+FMA clone is selected at load time where the CPU has it). Buffers are contiguous.
#ifndef CT_KERNELS_H
#define CT_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// In place: x[i] ← scale · exp(x[i] − max) / Σ exp(x[j] − max) over n values. Returns log Σ exp(x[j]),
/// the log-sum-exp of the input (for the cross-entropy).
float ct_softmax(float *x, size_t n, float scale);

/// act[i] = silu(gate[i]) · up[i] (the SwiGLU forward), n elements.
void ct_swiglu_forward(const float *gate, const float *up, float *act, size_t n);

/// From dAct: dGate[i] = dAct·up·silu'(gate), dUp[i] = dAct·silu(gate), n elements.
void ct_swiglu_backward(const float *gate, const float *up, const float *dAct, float *dGate, float *dUp, size_t n);

#ifdef __cplusplus
}
#endif
#endif
