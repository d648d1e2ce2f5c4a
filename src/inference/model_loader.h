#pragma once
// What `megatron generate` runs: a whole GPTModel with weights, from a Hugging Face directory
// (checkpoint/hf_import.h: GPT-2, Llama, Mistral, Qwen 2/3) or from one of our checkpoints (built
// from the architecture its common.json records, weights loaded from any layout it was saved
// under), with the tokenizer and end-of-sequence ids that come with it. With tensor parallelism
// (par.tp of several ranks) each rank builds and fills its shard; the vocabulary is padded to a
// multiple of 128 x TP, as Megatron pads it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "model/gpt_model.h"

namespace mt {

struct LoadedModel {
  std::unique_ptr<GPTModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when none was found
  std::string tokenizer_source;          // where it came from (for messages)
  std::vector<int32_t> eos_ids;          // end-of-sequence ids (may be empty)
  int32_t bos_id = -1;                   // beginning-of-sequence id, -1: none known
  int64_t max_sequence_length = 0;       // prompt plus new tokens may not exceed it
};

// DIR: config.json, model.safetensors (or a sharded index), optionally tokenizer.json (with
// tokenizer_config.json) and generation_config.json (eos_token_id, bos_token_id; else
// config.json's). UserError naming the file for anything missing or unsupported.
// With tensor parallelism every rank reads the whole model into host memory (fp32) and keeps its
// shard.
LoadedModel load_hf_model(const std::string& dir, DType dtype, Device device, const ModelParallelConfig& par = {});

// DIR: a --save directory (its latest checkpoint) or an iteration directory; or Megatron-LM's
// (torch_dist or torch format, checkpoint/megatron_lm_import.h), converted on the fly. The
// tokenizer is the one the run recorded (--tokenizer-type and its files), when its files are
// still there.
LoadedModel load_checkpoint_model(const std::string& dir, DType dtype, Device device,
                                  const ModelParallelConfig& par = {});

// An explicit tokenizer for either: a tokenizer.json or a folder holding one.
void set_tokenizer(LoadedModel& m, const std::string& tokenizer_json);

}  // namespace mt
