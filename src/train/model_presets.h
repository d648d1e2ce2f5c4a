#pragma once
// --model-preset NAME (megatron.cpp's own flag): the architecture flags of a common model shape,
// in Megatron's spelling, so that `--model-preset llama3.1-8b` stands for the two dozen flags a
// Megatron launch script would give. Flags given on the command line win over the preset's.
#include <string>
#include <utility>
#include <vector>

namespace mt {

struct ModelPreset {
  std::string name, description;
  std::vector<std::pair<std::string, std::string>> flags;  // (flag, value); value "" for a switch
};

const std::vector<ModelPreset>& model_presets();
const ModelPreset* find_model_preset(const std::string& name);  // null when unknown
std::string model_preset_names();                                // "a, b, c"

// Expands `--model-preset NAME` (or `--model-preset=NAME`) in a command line's arguments: the
// preset's flags are inserted where it stood, except those the arguments also give. Throws
// UserError for an unknown name. `expanded` (may be null) receives the inserted flags as text.
std::vector<std::string> expand_model_preset(const std::vector<std::string>& args, std::string* expanded);

}  // namespace mt
