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

}  // namespace mt
