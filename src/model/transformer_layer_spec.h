#pragma once
// TransformerLayerSpec: which module fills each slot of a transformer layer (Megatron-Core's
// TransformerLayerSubmodules, as plain data): the two norms, the self-attention's optional steps
// and the MLP's kind. gpt_layer_spec reads it off a config (Megatron's get_gpt_layer_local_spec);
// a model family is a config, and its layers are this one block built from the spec.
#include "model/transformer_config.h"

namespace mt {

enum class MlpKind : uint8_t {
  Dense,  // linear_fc1 -> activation -> linear_fc2 (GPT-2: GeLU fused into the GEMMs)
  Gated,  // linear_fc1 -> [gate | up] -> act(gate) * up -> linear_fc2 (SwiGLU)
};

struct SelfAttentionSpec {
  bool qk_layernorm = false;  // q_layernorm, k_layernorm (RMSNorm over each head) after linear_qkv
  bool rotary = false;        // RoPE on queries and keys before core attention
  // MLASelfAttention (multi_latent_attention.h) instead of SelfAttention; qk_layernorm then
  // means its q_layernorm / kv_layernorm over the latents, and RoPE is always on.
  bool multi_latent = false;
};

struct TransformerLayerSpec {
  Normalization input_layernorm = Normalization::LayerNorm;
  SelfAttentionSpec self_attention;
  Normalization pre_mlp_layernorm = Normalization::LayerNorm;
  MlpKind mlp = MlpKind::Dense;  // the dense MLP's kind, or the experts' in an MoE layer
  bool moe = false;              // MoELayer (router, experts, optional shared experts) in the MLP slot
};

// Layer `layer`'s spec (MoE models mix MoE and dense layers by moe_layer_pattern).
inline TransformerLayerSpec gpt_layer_spec(const TransformerConfig& c, int layer = 0) {
  TransformerLayerSpec s;
  s.input_layernorm = s.pre_mlp_layernorm = c.normalization;
  s.self_attention.qk_layernorm = c.qk_layernorm;
  s.self_attention.rotary = c.position_embedding_type == PositionEmbedding::Rope;
  s.self_attention.multi_latent = c.multi_latent_attention;
  s.mlp = c.gated_linear_unit ? MlpKind::Gated : MlpKind::Dense;
  s.moe = c.is_moe_layer(layer);
  return s;
}

}  // namespace mt
