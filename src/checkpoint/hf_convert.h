#pragma once
// `megatron convert`'s work: a Hugging Face directory into our native checkpoint and back,
// streaming (one tensor at a time: mapped in, converted, written, its pages dropped), so host
// memory stays near the largest tensor and not the model.
//
// A converted checkpoint is iteration 0 of an ordinary native checkpoint (weights only, no
// optimizer state), with the Hugging Face files that are not weights kept beside it in
// OUT/hf/ (config.json, generation_config.json, the tokenizer's), so that converting back
// restores them.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_export.h"
#include "model/transformer_config.h"

namespace mt {

constexpr const char* kHfAssetsDir = "hf";  // OUT/hf/ of a converted checkpoint

struct HfConvertStats {
  uint64_t bytes_read = 0, bytes_written = 0;
  int64_t tensors = 0;
  HfFamily family = HfFamily::Llama;
};

// HF_DIR (architecture `cfg`, from read_hf_config) -> OUT_DIR/iter_0000000 with common.json
// `common`; tensors keep their dtype in the Hugging Face files unless `dtype` is given.
HfConvertStats convert_hf_to_checkpoint(const std::string& hf_dir, const std::string& out_dir,
                                        const TransformerConfig& cfg, const nlohmann::json& common,
                                        const CheckpointLayout& layout, std::optional<DType> dtype = std::nullopt);

// The latest checkpoint of CKPT_DIR (architecture `cfg`, from its recorded arguments) -> a Hugging
// Face directory OUT_DIR, in the checkpoint's dtype (its word embeddings') unless `dtype` is given.
// The config.json keys, generation config and tokenizer files come from `assets_dir` (a Hugging
// Face directory), or when empty from the ones convert_hf_to_checkpoint kept (CKPT_DIR/hf/), when
// there.
HfConvertStats convert_checkpoint_to_hf(const std::string& ckpt_dir, const std::string& out_dir,
                                        const TransformerConfig& cfg, std::optional<DType> dtype,
                                        HfExportOptions opt = {}, const std::string& assets_dir = "");

}  // namespace mt
