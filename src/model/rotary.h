#pragma once
// Rotary position embedding's angle tables (Megatron's RotaryEmbedding): for the R = rot_dim
// rotated channels of a head, the frequencies f_i = base^(-2i / R), i < R/2, optionally rescaled
// as Llama 3.1 does, and cos(t f_i), sin(t f_i) for positions t < seq as fp32 [seq, R/2]
// (rope.h applies them).
//
// Llama 3.1 scaling (--use-rope-scaling, factor s, low/high frequency factors 1 and 4 over an
// original context of 8192, as Megatron and Hugging Face's "llama3" rope type): wavelengths
// 2 pi / f shorter than 8192 / 4 keep f, longer than 8192 / 1 become f / s, and those between
// interpolate smoothly between the two.
#include <vector>

#include "core/tensor.h"
#include "model/transformer_config.h"

namespace mt {

// The R/2 frequencies f_i in fp32, as Hugging Face's inv_freq (the Llama 3.1 rescaling in double).
std::vector<float> rope_frequencies(const TransformerConfig& cfg);

struct RotaryTables {
  Tensor cos, sin;         // fp32 [seq, R/2]
  bool per_token = false;  // cos, sin are [B T, R/2]: one row per token of a microbatch (explicit positions)
};
RotaryTables rope_tables(const TransformerConfig& cfg, int64_t seq, Device device);

}  // namespace mt
