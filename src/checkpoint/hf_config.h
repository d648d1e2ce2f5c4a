#pragma once
// config.json of a Hugging Face model <-> TransformerConfig, both ways, for the families of
// hf_mapping.h (GPT2LMHeadModel and the Llama family: Llama, Mistral, Qwen 2, Qwen 3; with experts,
// Mixtral and Qwen 3 MoE: num_local_experts / num_experts, num_experts_per_tok, the experts' width,
// norm_topk_prob, mlp_only_layers and decoder_sparse_step, router_aux_loss_coef).
#include <nlohmann/json.hpp>

#include <string>

#include "checkpoint/hf_mapping.h"
#include "model/transformer_config.h"

namespace mt {

// The family of a parsed config.json (its model_type); UserError naming `file` for another.
HfFamily hf_family_of(const nlohmann::json& config, const std::string& file);

// The architecture a config.json describes, with the vocabulary unpadded (padded_vocab_size =
// vocab_size), the dropouts it gives (GPT-2: resid_pdrop/attn_pdrop; the Llama family:
// attention_dropout, hidden 0), seq_length = max_position_embeddings (the sliding window when
// smaller: attention up to it is full causal attention). UserError naming the file and field for
// a setting we cannot represent (another rope_type, Llama-style attention or MLP biases, an
// activation other than SiLU or GPT-2's tanh GeLU).
TransformerConfig hf_config_to_ours(const nlohmann::json& config, const std::string& file);

// config.json for our architecture as a model of family f with weights of `dtype`. With a
// `base` config (the one a converted model came from), its other keys (token ids, sliding window,
// ...) are kept and the rope settings keep its spelling (rope_parameters, or rope_theta and
// rope_scaling); without, both spellings are written, for transformers 4 and 5.
nlohmann::json hf_config_from_ours(const TransformerConfig& cfg, HfFamily f, DType dtype,
                                   const nlohmann::json& base = nlohmann::json());

}  // namespace mt
