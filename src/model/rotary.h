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
//
// YaRN (--rope-type yarn: DeepSeek-V3, Megatron's YarnRotaryEmbedding, Hugging Face's "yarn"), with
// scaling factor s over an original context L (--original-max-position-embeddings), R channels:
//   extra_i = base^(-2i/R),  inter_i = extra_i / s,
//   d(n) = R ln(L / (2 pi n)) / (2 ln base)   (the channel index completing n rotations over L),
//   lo = max(floor(d(beta_fast)), 0),  hi = min(ceil(d(beta_slow)), R - 1)  (hi += 0.001 when equal),
//   ramp_i = clamp((i - lo) / (hi - lo), 0, 1),  keep_i = 1 - ramp_i,
//   f_i = inter_i (1 - keep_i) + extra_i keep_i          (fp32, as both references compute it)
// and the tables cos, sin times m = mscale(s, --mscale) / mscale(s, --mscale-all-dim), where
// mscale(s, k) = 0.1 k ln(s) + 1 for s > 1, else 1 (multi-latent attention's softmax scale takes
// mscale(s, --mscale-all-dim)^2 in turn; see multi_latent_attention.h).
#include <vector>

#include "core/tensor.h"
#include "model/transformer_config.h"

namespace mt {

// The R/2 frequencies f_i in fp32, as Hugging Face's inv_freq (the Llama 3.1 rescaling in double).
std::vector<float> rope_frequencies(const TransformerConfig& cfg);
// YaRN's mscale(s, k) above (DeepSeek's yarn_get_mscale), in double.
double yarn_get_mscale(double scale, double mscale);
// The factor m on the cos/sin tables (1 unless rope_type is Yarn).
float rope_table_scale(const TransformerConfig& cfg);

struct RotaryTables {
  Tensor cos, sin;         // fp32 [seq, R/2]
  bool per_token = false;  // cos, sin are [B T, R/2]: one row per token of a microbatch (explicit positions)
};
RotaryTables rope_tables(const TransformerConfig& cfg, int64_t seq, Device device);
// The rows of `tables` at each token's position: positions int32 [n] (any shape of n elements) on
// the tables' device -> per-token tables [n, R/2] (per_token), for tokens whose positions are not
// 0..T-1 of every sample (context parallelism, document positions, generation steps).
RotaryTables rope_rows(const RotaryTables& tables, const Tensor& positions);

}  // namespace mt
