#pragma once
// Matrix multiply: C[m,n] = alpha * op(A) @ op(B) + beta * C  (+ bias[n] broadcast over rows).
//   op(X) = X or X^T. A and B are 2-D, contiguous, of one float dtype (fp32/bf16/fp16);
//   C is fp32 or A's dtype; bias (optional) is A's dtype or fp32. Accumulation is fp32.
//   beta = 1 with an fp32 C accumulates weight gradients into main grads.
// Cost: 2*m*n*k FLOPs; bytes (m*k + k*n) * sizeof(A) + m*n * sizeof(C) * (1 + (beta != 0)).
#include "core/tensor.h"

namespace mt {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
          float alpha = 1.0f, float beta = 0.0f, const Tensor* bias = nullptr, Stream s = {});

// db_accum[c] += sum_n dy[n, c]  (dy: [N, C] any float dtype; db_accum fp32 [C]).
void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum, Stream s = {});

}  // namespace mt
