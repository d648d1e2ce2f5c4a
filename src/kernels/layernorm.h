#pragma once
// LayerNorm over the last dimension C of x [N, C]:
//   y = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)  (biased variance, fp32 statistics)
// Forward saves mean and rstd (fp32 [N]) for backward. Backward accumulates dw, db into fp32
// buffers (main grads) and writes dx. Bytes: forward reads x once, writes y; backward reads
// dy, x once and writes dx.
#include "core/tensor.h"

namespace mt {

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd, Stream s = {});
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dx, const Tensor& dw_accum,
                        const Tensor& db_accum, Stream s = {});

// The pre-LN block's residual add fused into its LayerNorms (each is, by definition, the op
// sequence in its brackets, which is the CPU reference; CUDA does it in one kernel):
//   forward:  sum = x + r (rounded to x's dtype: the residual stream), y = LN(sum), saving the
//             add's write-and-read of sum.                 [add(x, r, sum); layernorm_forward(sum, ..)]
//             sum may alias x or r.
//   backward: dx = LN's dx + dres (the gradient that bypassed the branch), saving the add's
//             read-read-write pass.                        [layernorm_backward(.., dx, ..); add(dx, dres, dx)]
//             dx may alias dy, not dres.
void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd,
                           Stream s = {});
void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                            const Tensor& rstd, const Tensor& dres, const Tensor& dx, const Tensor& dw_accum,
                            const Tensor& db_accum, Stream s = {});

}  // namespace mt
