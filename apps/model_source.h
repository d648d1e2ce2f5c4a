#pragma once
// The model flags `megatron generate` and `megatron serve` share: where the model comes from
// (--load, our checkpoint, or --load-hf, a Hugging Face directory), an explicit --tokenizer-model,
// --device and --bf16; their checks and the load itself.
#include <CLI/CLI.hpp>

#include <string>

#include "inference/model_loader.h"

namespace mt {

struct ModelSourceOptions {
  std::string load, load_hf, tokenizer_model;
  std::string device = "auto";
  bool bf16 = false;

  const std::string& dir() const { return load_hf.empty() ? load : load_hf; }
  std::string flag() const { return load_hf.empty() ? "--load " + load : "--load-hf " + load_hf; }  // for messages
  DType dtype() const { return bf16 ? DType::BF16 : DType::F32; }
};

// Adds the flags to `app` in the group "Model".
void add_model_source_flags(CLI::App& app, ModelSourceOptions& o);

// ArgumentError naming the flag: neither or both of --load and --load-hf, an unknown --device.
void check_model_source(const ModelSourceOptions& o);

// The --device to run on (ArgumentError: every rank gets the same answer, said once).
Device model_source_device(const ModelSourceOptions& o);

// Loads the model (this rank's shard under par.tp) and applies --tokenizer-model.
LoadedModel load_model_source(const ModelSourceOptions& o, Device device, const ModelParallelConfig& par = {});

}  // namespace mt
