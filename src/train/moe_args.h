#pragma once
// The Mixture-of-Experts flags: checked (one-line user errors naming the flag) and turned into
// TransformerConfig's moe_* fields.
#include <vector>

#include "model/transformer_config.h"
#include "train/arguments.h"

namespace mt {

// UserError on a bad MoE flag (called by validate_args).
void validate_moe_args(const TrainingArgs& a);
// --moe-layer-freq: N -> [1, 0, .., 0] (N entries; every Nth layer from layer 0), "1" -> every
// layer (empty), a list "[1,0,1,1]" -> itself (num_layers entries).
std::vector<int> parse_moe_layer_freq(const std::string& value, int num_layers);
void apply_moe_args(const TrainingArgs& a, TransformerConfig& c);

}  // namespace mt
