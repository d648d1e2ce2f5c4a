#pragma once
// Registers `megatron preprocess` and `megatron merge-datasets` on a CLI11 app.
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "data/preprocess.h"

namespace mt {

// The tokenizer flags Megatron shares between pretrain_gpt.py and preprocess_data.py.
void add_tokenizer_flags(CLI::App& app, TokenizerOptions& t, const char* group);

struct PreprocessCommand {
  CLI::App* app = nullptr;
  std::shared_ptr<PreprocessOptions> opts;
};
PreprocessCommand add_preprocess_command(CLI::App& app);
void run_preprocess(const PreprocessOptions& o);

struct MergeCommand {
  CLI::App* app = nullptr;
  std::shared_ptr<std::vector<std::string>> inputs;
  std::shared_ptr<std::string> output;
};
MergeCommand add_merge_command(CLI::App& app);
void run_merge(const MergeCommand& c);

}  // namespace mt
