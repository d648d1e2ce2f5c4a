#pragma once
// The Hugging Face <-> megatron.cpp tensor mapping: one table per model family, used in both
// directions (import, export and `megatron convert`). Each row names one of our parameters
// (Megatron-Core's names) and the Hugging Face tensors it is made of, and how: the same tensor,
// a Conv1D weight transposed (GPT-2), q/k/v fused into Megatron's linear_qkv order by query group,
// or gate/up stacked into linear_fc1. The conversions are row permutations of raw bytes, so a
// round trip is bit-identical in any dtype. Mixture-of-Experts families (Mixtral, Qwen 3 MoE) map
// each expert's gate/up/down tensors to our experts (global index) and the router to its gate.
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/transformer_config.h"

namespace mt {

// The Hugging Face model classes we read and write.
enum class HfFamily { Gpt2, Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3Moe };

const char* hf_model_type(HfFamily f);    // "gpt2", "llama", ...
const char* hf_architecture(HfFamily f);  // "GPT2LMHeadModel", "LlamaForCausalLM", ...
// The family of a config.json's model_type; false when we have none.
bool hf_family_from_model_type(const std::string& model_type, HfFamily& out);
// The Hugging Face class that holds a model of this architecture (GPT-2's, or the Llama family's:
// q/k norm -> Qwen 3, q/k/v bias -> Qwen 2, else Llama; with experts: q/k norm -> Qwen 3 MoE, else
// Mixtral). UserError naming what no family holds.
HfFamily hf_family_for(const TransformerConfig& cfg);
bool hf_is_llama_family(HfFamily f);
bool hf_is_moe_family(HfFamily f);  // Mixtral, Qwen 3 MoE

// How our tensor's rows come from the Hugging Face tensors'.
enum class HfLayout : uint8_t {
  Same,            // one tensor, same shape
  Conv1D,          // one tensor, transposed (GPT-2's Conv1D weights are [in, out])
  Qkv,             // q, k, v -> linear_qkv rows [group, (heads per group q heads, k, v), head_dim]
  FusedQkv,        // one tensor [q; k; v] (GPT-2's c_attn bias) -> the same order as Qkv
  FusedQkvConv1D,  // GPT-2's c_attn weight: transposed, then as FusedQkv
  Stacked,         // tensors stacked along a new first dimension: [gate; up] -> linear_fc1 [2, F, C]
};

struct HfTensorMap {
  std::string name;         // ours, e.g. "decoder.layers.0.self_attention.linear_qkv.weight"
  Shape shape;              // ours, as checkpoints store it (vocabulary rows not padded)
  bool vocab_rows = false;  // dim 0 is the vocabulary (padded in the model)
  HfLayout layout = HfLayout::Same;
  std::vector<std::string> hf_names;  // the Hugging Face tensors, in the order the layout takes them
  std::vector<Shape> hf_shapes;
  int64_t groups = 0, heads = 0, head_dim = 0;  // the Qkv layouts: query groups, attention heads, channels
  bool expert = false;  // one expert's weight: in the model's expert buffer (GPTModel::expert_buffer())
  // MoE families: where transformers 5 holds the same tensors in memory (its state_dict(), and files
  // saved from it): alt_name whole (alt_index < 0; the router's "mlp.gate.weight" for Mixtral's
  // "block_sparse_moe.gate.weight"), or slice alt_index of the 3-D alt_name holding every expert,
  // [E, sum of hf_shapes' rows, ...] (gate_up_proj [E, 2F, C] = [gate; up] per expert, down_proj
  // [E, C, F]). Readers take it when the hf_names are absent; writers write the hf_names (what
  // save_pretrained writes). Empty: none.
  std::string alt_name;
  Shape alt_shape;
  int64_t alt_index = -1;
};

// Every tensor of a model of family f and config cfg, in model order. Checks that cfg is one the
// family holds (UserError naming the setting otherwise).
std::vector<HfTensorMap> hf_tensor_maps(HfFamily f, const TransformerConfig& cfg);

// Our tensor from its Hugging Face tensors (CPU, contiguous, hf_shapes; the first one's dtype,
// others cast to it), and back. Host tensors; the bytes are moved, never converted. The Same
// layout returns its input itself (no copy).
Tensor hf_to_ours(const HfTensorMap& m, const std::vector<Tensor>& hf);
std::vector<Tensor> ours_to_hf(const HfTensorMap& m, const Tensor& ours);

}  // namespace mt
