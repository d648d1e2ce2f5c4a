#pragma once
// GeLU (tanh approximation) over fp32 rows, 8 lanes at a time with AVX2 + FMA: gelu_avx512.h's
// entry points for the AVX2 path (activation.cpp and the GEMM's fused epilogues, so the fused and
// the separate op give the same bits). x86-64 only; call only when cpu_isa() is CpuIsa::kAvx2.
#include <cstdint>

namespace mt::cpu::avx2 {

// y[i] = gelu(x[i]) for i < n.
void gelu_forward(const float* x, float* y, int64_t n);
// dx[i] = dy[i] gelu'(x[i]) for i < n; dx may be dy.
void gelu_backward(const float* dy, const float* x, float* dx, int64_t n);

}  // namespace mt::cpu::avx2
