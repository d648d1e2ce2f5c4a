#pragma once
// Hugging Face decoder-only models into our GPTModel: GPT2LMHeadModel, and the Llama family
// (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM), which share one
// mapping table (hf_import.cpp): names, q/k/v fused into Megatron's per-group linear_qkv order,
// gate/up stacked into linear_fc1, the output layer tied or untied. Reads config.json and
// model.safetensors or a sharded index. Export and `megatron convert` are the conversion issue's.
#include <string>

#include "model/gpt_model.h"

namespace mt {

// DIR/config.json as a TransformerConfig (model_type gpt2, llama, mistral, qwen2, qwen3); vocabulary
// padded to make_vocab_size_divisible_by; dropouts 0. UserError naming the file and field for a
// model or setting we cannot represent (another rope_type, attention or MLP biases Llama-style,
// an activation other than SiLU).
TransformerConfig read_hf_config(const std::string& dir, DType params_dtype, int64_t make_vocab_size_divisible_by);

// Copies the weights into a single-rank model built from read_hf_config (every tensor whole).
void load_hf_weights(const std::string& dir, GPTModel& model);

}  // namespace mt
