#pragma once
// The activation-recomputation flags, Megatron-LM's (--recompute-granularity, --recompute-method,
// --recompute-num-layers, --recompute-modules, --recompute-activations) and ours
// (--recompute-gelu): checked with Megatron's rules (one-line user errors naming the flag) and
// turned into TransformerConfig's recompute_* fields.
#include "model/transformer_config.h"
#include "train/arguments.h"

namespace mt {

// UserError on a bad combination (called by validate_args).
void validate_recompute_args(const TrainingArgs& a);
void apply_recompute_args(const TrainingArgs& a, TransformerConfig& c);

}  // namespace mt
