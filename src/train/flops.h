#pragma once
// FLOP counting for throughput and MFU, from the config (Megatron's num_floating_point_operations):
// per token, 6 FLOPs per weight of every matrix multiply (forward 2, backward 4), with grouped
// query attention and gated MLPs counted as they are, plus 12 L s H D for attention scores and
// values (forward + backward, dense count) and 6 h Vp for the output layer.
#include <cstdint>

#include "model/transformer_config.h"

namespace mt {

double flops_per_token(const TransformerConfig& cfg);

}  // namespace mt
