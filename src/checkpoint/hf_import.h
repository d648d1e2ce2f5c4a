#pragma once
// Hugging Face decoder-only models into our GPTModel: GPT2LMHeadModel, LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM and
// Qwen3MoeForCausalLM, through the family mapping tables of
// hf_mapping.h (shared with export and `megatron convert`). Reads config.json and
// model.safetensors or a sharded index.
#include <string>

#include "model/gpt_model.h"

namespace mt {

// DIR/config.json as a TransformerConfig (hf_config_to_ours), the vocabulary padded to
// make_vocab_size_divisible_by.
TransformerConfig read_hf_config(const std::string& dir, DType params_dtype, int64_t make_vocab_size_divisible_by);

// Copies the weights into a single-rank model built from read_hf_config (every tensor whole, every
// expert); vocabulary padding rows are zero.
void load_hf_weights(const std::string& dir, GPTModel& model);

// Copies into `buf` (and `expert_buf`, an MoE model's expert buffer, when not null) this rank's part
// of every parameter it holds, under any layout (tensor-parallel shards, pipeline stages, a rank's
// virtual stages, the last stage's tied-embedding copy, an expert-parallel rank's experts), from the
// Hugging Face directory of a model of architecture cfg (the trainer's: vocabulary padding rows are
// zero). UserError naming the tensor when the directory lacks one or holds it in another shape.
void load_hf_weights_into(const std::string& dir, const TransformerConfig& cfg, ParamAndGradBuffer& buf,
                          ParamAndGradBuffer* expert_buf = nullptr);

}  // namespace mt
