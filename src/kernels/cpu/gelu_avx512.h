#pragma once
// GeLU (tanh approximation, activation.h) over fp32 rows, 16 lanes at a time with AVX-512. Used
// by gelu_forward / gelu_backward on fp32 tensors and by the GEMM's fused epilogues (gemm.cpp),
// so the fused and the separate op give the same bits. x86-64 only; call only when
// sgemm_avx512_available() (blas.h). Each element's result depends on its inputs only (a short
// tail runs the same code under a mask), not on where a row starts.
#include <cstdint>

namespace mt::cpu::avx512 {

// y[i] = gelu(x[i]) for i < n.
void gelu_forward(const float* x, float* y, int64_t n);
// dx[i] = dy[i] gelu'(x[i]) for i < n; dx may be dy.
void gelu_backward(const float* dy, const float* x, float* dx, int64_t n);

}  // namespace mt::cpu::avx512
