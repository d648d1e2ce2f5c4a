#pragma once
// Our models out as Hugging Face model directories: config.json (hf_config_from_ours) and the
// weights through the family's mapping table (hf_mapping.h), in model.safetensors or, above
// max_shard_bytes, model-0000k-of-0000n.safetensors with model.safetensors.index.json. The
// weights are written one tensor at a time from a source of our tensors, so an export needs
// host memory for about one tensor, whatever the model's size.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

#include "checkpoint/hf_mapping.h"
#include "model/gpt_model.h"

namespace mt {

struct HfExportOptions {
  uint64_t max_shard_bytes = 5'000'000'000;  // transformers' default "5GB"
  // The config.json a converted model came from (its other keys are kept, and its model_type
  // when that family holds the architecture: Mistral stays Mistral); null: none.
  nlohmann::json base_config;
};

struct HfExportStats {
  uint64_t bytes = 0;  // of the weight files
  int files = 0;
  HfFamily family = HfFamily::Llama;
};

// Our tensor m.name, whole ([m.shape]: the real vocabulary rows), on the host, any float dtype.
using OurTensorSource = std::function<Tensor(const HfTensorMap& m)>;

// Writes DIR (created if needed) for a model of architecture cfg with weights of `dtype`.
HfExportStats write_hf_model(const std::string& dir, const TransformerConfig& cfg, DType dtype,
                             const OurTensorSource& source, const HfExportOptions& opt = {});

// A single-rank whole model (GPTModel with tp 1, every layer), in its parameters' dtype.
HfExportStats save_hf_model(const GPTModel& model, const std::string& dir, const HfExportOptions& opt = {});

// Copies the files of a Hugging Face directory that are not weights or config.json, when there:
// generation_config.json and the tokenizer's (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, added_tokens.json, vocab.json, merges.txt, tokenizer.model,
// chat_template.jinja). Returns the names copied.
std::vector<std::string> copy_hf_assets(const std::string& from_dir, const std::string& to_dir);

}  // namespace mt
