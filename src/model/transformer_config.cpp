#include "model/transformer_config.h"

#include <fmt/format.h>

namespace mt {

int64_t pad_vocab_size(int64_t vocab, int64_t divisible_by) {
  if (divisible_by <= 1) return vocab;
  return (vocab + divisible_by - 1) / divisible_by * divisible_by;
}

const char* normalization_name(Normalization n) { return n == Normalization::RMSNorm ? "RMSNorm" : "LayerNorm"; }

const char* position_embedding_name(PositionEmbedding p) {
  switch (p) {
    case PositionEmbedding::LearnedAbsolute: return "learned_absolute";
    case PositionEmbedding::Rope: return "rope";
    case PositionEmbedding::None: return "none";
  }
  return "?";
}

bool describes_non_gpt2(const TransformerConfig& c) {
  return c.normalization != Normalization::LayerNorm || c.gated_linear_unit || c.activation != Activation::Gelu ||
         c.query_groups() != c.num_attention_heads || c.head_dim() * c.num_attention_heads != c.hidden_size ||
         !c.add_bias_linear || c.add_qkv_bias || c.qk_layernorm || !c.learned_positions() ||
         c.untie_embeddings_and_output_weights;
}

std::string describe_architecture(const TransformerConfig& c) {
  std::string s = fmt::format("{}, {} MLP, {} heads in {} query groups of dim {}", normalization_name(c.normalization),
                              c.gated_linear_unit ? "SwiGLU" : "GeLU", c.num_attention_heads, c.query_groups(),
                              c.head_dim());
  s += fmt::format(", position embedding {}", position_embedding_name(c.position_embedding_type));
  if (c.position_embedding_type == PositionEmbedding::Rope) {
    s += fmt::format(" (base {:g}, {} of {} channels", c.rotary_base, c.rotary_dim(), c.head_dim());
    if (c.rope_scaling) s += fmt::format(", Llama 3.1 scaling x{:g}", c.rope_scaling_factor);
    s += ")";
  }
  s += c.add_bias_linear ? ", biases" : c.add_qkv_bias ? ", QKV bias only" : ", no biases";
  if (c.qk_layernorm) s += ", q/k norm";
  s += c.untie_embeddings_and_output_weights ? ", untied output layer" : ", tied output layer";
  return s;
}

}  // namespace mt
