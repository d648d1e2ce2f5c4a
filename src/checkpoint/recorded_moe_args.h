#pragma once
// The experts a checkpoint's recorded arguments (common.json "args", written by training and by
// `megatron convert`) describe: TransformerConfig's moe_* fields from Megatron's flag names. A
// checkpoint from before MoE has none; one from before the router's settings were recorded gets
// their defaults. Shared by `train --load` (the architecture) and `generate --load`.
#include <nlohmann/json.hpp>

#include "model/transformer_config.h"

namespace mt {

// Needs c.num_layers set (for moe_layer_freq).
void read_recorded_moe_args(const nlohmann::json& args, TransformerConfig& c);

}  // namespace mt
