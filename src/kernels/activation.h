#pragma once
// Pointwise activations and dropout. Tensors are contiguous, of equal numel, any float dtype.
#include <cstdint>

#include "core/tensor.h"

namespace mt {

// GeLU, tanh approximation (GPT-2 / Megatron's gelu_impl):
//   y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void gelu_forward(const Tensor& x, const Tensor& y, Stream s = {});
// dx = dy * gelu'(x); dx may alias dy.
void gelu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s = {});

// Inverted dropout: y[i] = keep(i) ? x[i] / (1 - p) : 0,
//   keep(i) = philox_uniform(seed, stream, offset + i) > p.
// The mask is a pure function of (seed, stream, offset + i): backward regenerates it instead of
// storing it. `offset` places x in a larger tensor's element order (the global [B, T, C] hidden
// states of which a sequence- or data-parallel rank holds a slice), so every layout draws the
// same mask. p = 0 copies. y may alias x; dx may alias dy.
void dropout_forward(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, Stream s = {},
                     uint64_t offset = 0);
void dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream, Stream s = {},
                      uint64_t offset = 0);

}  // namespace mt
