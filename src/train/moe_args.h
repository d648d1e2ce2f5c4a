#pragma once
// The Mixture-of-Experts flags: checked (one-line user errors naming the flag) and turned into
// TransformerConfig's moe_* fields.
#include <vector>

#include "model/transformer_config.h"
#include "train/arguments.h"

namespace mt {

// UserError on a bad MoE flag (called by validate_args).
void validate_moe_args(const TrainingArgs& a);
// parse_moe_layer_freq (--moe-layer-freq): model/transformer_config.h.
void apply_moe_args(const TrainingArgs& a, TransformerConfig& c);

}  // namespace mt
