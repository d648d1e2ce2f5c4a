#pragma once
// Registers `megatron convert`: a Hugging Face model directory into our native checkpoint
// (--from hf --to megatron) and back (--from megatron --to hf), streaming, on the CPU.
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

namespace mt {

struct ConvertCommand {
  CLI::App* app = nullptr;
  struct Options {
    std::string from, to, input, output;
    int target_tp = 1, target_pp = 1;
    std::string max_shard_size = "5GB";
    std::string dtype;  // "" keeps the input's
    std::string hf_assets;
  };
  std::shared_ptr<Options> opts;
};
ConvertCommand add_convert_command(CLI::App& app);
void run_convert(const ConvertCommand& c);  // UserError on bad input

}  // namespace mt
