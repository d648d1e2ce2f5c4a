#pragma once
// SwiGLU, the gated MLP's activation (Megatron's --swiglu): the fc1 output x [N, 2F] holds per row
// the gate half then the up half ([gate | up], each F wide; with tensor parallelism this rank's
// halves), and
//   y = silu(gate) * up,   silu(g) = g sigmoid(g)                       y [N, F]
//   dgate = dy up silu'(g),  silu'(g) = sigmoid(g) (1 + g (1 - sigmoid(g))),  dup = dy silu(g)
// fp32 math, one rounding. Bytes: forward reads 2F and writes F per row; backward reads 3F, writes 2F.
#include "core/tensor.h"

namespace mt {

void swiglu_forward(const Tensor& x, const Tensor& y, Stream s = {});
// dx [N, 2F] (not accumulated); dx must not alias x or dy.
void swiglu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s = {});

}  // namespace mt
