#pragma once
// Registers `megatron serve`: Megatron's text generation server (PUT /api) and OpenAI's
// completions API (POST /v1/completions, GET /v1/models) over HTTP, for a model from a Hugging
// Face directory (--load-hf) or one of our checkpoints (--load). One process; requests are
// taken concurrently but run on the model one at a time. SIGTERM or SIGINT stops it (exit 0).
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "model_source.h"

namespace mt {

struct ServeCommand {
  CLI::App* app = nullptr;
  struct Options {
    ModelSourceOptions model;
    std::string served_model_name;
    std::string host = "127.0.0.1";
    int port = 5000;  // Megatron's; 0: any free port (the chosen one is printed)
  };
  std::shared_ptr<Options> opts;
};
ServeCommand add_serve_command(CLI::App& app);
void run_serve(const ServeCommand::Options& o);  // returns once stopped by a signal

}  // namespace mt
