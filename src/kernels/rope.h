#pragma once
// Rotary position embedding (RoPE) in the half-split convention of Hugging Face and Megatron
// (rotate_half): for a head vector x and its first R = rot_dim channels (R even, R <= D),
//   i < R/2:  y[i]       = x[i] cos(t f_i) - x[i + R/2] sin(t f_i)
//             y[i + R/2] = x[i + R/2] cos(t f_i) + x[i] sin(t f_i)
//   i >= R:   y[i] = x[i]   (--rotary-percent < 1 leaves the tail unrotated)
// t is the token's position in its sequence. The angles come as tables cos, sin fp32 [T, R/2]
// (rope_tables in model/rotary.h computes them, Llama 3.1 scaling included), math in fp32,
// one rounding to the tensor's dtype.
//
// Applied in place to the query and key heads of the fused QKV output qkv [B, T, G, Q/G + 2, D]
// (attention.h's layout); value heads are untouched. Backward is the inverse rotation (the
// transpose), applied in place to dqkv's query and key heads. Bytes: reads and writes q and k once.
#include "core/tensor.h"

namespace mt {

void rope_forward(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim,
                  Stream s = {});
void rope_backward(const Tensor& dqkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim,
                   Stream s = {});

}  // namespace mt
