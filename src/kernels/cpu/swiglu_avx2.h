#pragma once
// SwiGLU over fp32 rows, 8 lanes at a time with AVX2 + FMA (swiglu.cpp has the math). Used by
// swiglu.cpp on fp32 tensors on the AVX-512 and AVX2 paths (every AVX-512 CPU has AVX2 + FMA).
// x86-64 only; call only when cpu_isa() is not CpuIsa::kPortable. Each element's result depends
// on its inputs only (a short tail runs the same code under a mask).
#include <cstdint>

namespace mt::cpu::avx2 {

// y[j] = silu(gate[j]) up[j] for j < n.
void swiglu_forward(const float* gate, const float* up, float* y, int64_t n);
// dgate[j] = dy u s (1 + g (1 - s)), dup[j] = dy g s (s = sigmoid(g), g = gate[j], u = up[j]).
void swiglu_backward(const float* dy, const float* gate, const float* up, float* dgate, float* dup, int64_t n);

}  // namespace mt::cpu::avx2
