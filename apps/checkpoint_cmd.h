#pragma once
// Registers `megatron checkpoint inspect DIR`: iteration, layout, tensors, shapes, sizes of a
// native checkpoint (optionally verifying every checksum).
#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace mt {

struct CheckpointCommand {
  CLI::App* app = nullptr;      // `checkpoint`
  CLI::App* inspect = nullptr;  // `checkpoint inspect`
  struct Options {
    std::string dir;
    int64_t iteration = -1;
    bool verify = false;
  };
  std::shared_ptr<Options> opts;
};
CheckpointCommand add_checkpoint_command(CLI::App& app);
void run_checkpoint(const CheckpointCommand& c);  // UserError on a bad directory / file

}  // namespace mt
