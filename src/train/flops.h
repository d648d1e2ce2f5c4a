#pragma once
// FLOP counting for throughput and MFU: per token, 6 N for the dense parameters (forward 2N,
// backward 4N) plus 12 L h s for attention scores and values (forward + backward, dense
// count), N = parameters without position embeddings.
#include <cstdint>

#include "model/config.h"

namespace mt {

double flops_per_token(const GPTConfig& cfg, int64_t num_params_without_positions);

}  // namespace mt
