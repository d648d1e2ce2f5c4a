#pragma once
// A checkpoint records its model's architecture (common.json "args", train/checkpointing.h's
// args_to_json), so training from it needs no architecture flags: `megatron train --load DIR`
// stands for the architecture flags of DIR's latest checkpoint, the way --model-preset stands for
// a preset's. Shape-defining flags given explicitly must agree with the checkpoint (a one-line
// error otherwise); the others (dropouts, norm epsilon) given explicitly win.
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "model/transformer_config.h"

namespace mt {

// common.json "args" for a model of architecture cfg, as a training run of it under
// tensor-parallel size `tp` would record them (a converted checkpoint's).
nlohmann::json checkpoint_args_for(const TransformerConfig& cfg, int tp);

// The architecture recorded in a checkpoint's "args" (vocabulary unpadded: padded_vocab_size =
// vocab_size); UserError naming `where` when a key is missing (a checkpoint written before the
// architecture was recorded).
TransformerConfig config_from_checkpoint_args(const nlohmann::json& args, const std::string& where);

// The architecture flags of recorded "args", in Megatron's spelling: (flag, value), value ""
// for a switch.
std::vector<std::pair<std::string, std::string>> checkpoint_architecture_flags(const nlohmann::json& args);

// Expands a `train` command line that has `--load DIR` (DIR holding a checkpoint whose common.json
// records its arguments): its architecture flags are inserted after --load DIR, except those the
// command line gives itself, and --no-load-optim when the checkpoint holds no optimizer state (a
// converted model) and neither --finetune nor --no-load-optim is given. Other command lines come
// back unchanged. UserError for a shape flag given with another value than the checkpoint's.
// `expanded` (may be null) receives the inserted flags as text.
std::vector<std::string> expand_checkpoint_architecture(const std::vector<std::string>& args, std::string* expanded);

// The same for `megatron train --load-hf DIR` (a Hugging Face model directory): the architecture
// of DIR/config.json (vocabulary and position table included; not the sequence length, which the
// command line sets), flags given explicitly win (a shape that disagrees with the weights is then
// the loader's one-line error, naming the tensor).
std::vector<std::string> expand_hf_architecture(const std::vector<std::string>& args, std::string* expanded);

}  // namespace mt
