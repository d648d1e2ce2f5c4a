#include "model/transformer_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace mt {

bool TransformerConfig::full_recompute_group(int i, int n, int* first, int* last) const {
  const int k = recompute_num_layers;
  if (recompute_granularity != RecomputeGranularity::Full || k <= 0) return false;
  if (recompute_method == RecomputeMethod::Block) {  // Megatron: the first k layers, one by one
    *first = *last = i;
    return i < k;
  }
  *first = i / k * k;  // uniform: groups of k (the last one may be shorter)
  *last = std::min(*first + k, n) - 1;
  return true;
}

RecomputeModules parse_recompute_modules(const std::vector<std::string>& names) {
  RecomputeModules m;
  for (const std::string& n : names) {
    if (n == "core_attn") m.core_attn = true;
    else if (n == "layernorm") m.layernorm = true;
    else if (n == "mlp") m.mlp = true;
    else if (n == "moe") m.moe = true;
    else if (n == "moe_act") m.moe_act = true;
    else if (n == "shared_experts") m.shared_experts = true;
    else if (n == "mlp_act") m.mlp_act = true;
    else if (n == "mla_up_proj")
      MT_USER_ERROR("--recompute-modules mla_up_proj: not built yet for multi-latent attention (core_attn and "
                    "layernorm recompute it)");
    else
      MT_USER_ERROR("--recompute-modules {}: expected core_attn, layernorm, mlp, mlp_act, moe, moe_act or "
                    "shared_experts", n);
  }
  return m;
}

std::vector<int> parse_moe_layer_freq(const std::string& v, int num_layers) {
  const std::string flag = "--moe-layer-freq";
  if (!v.empty() && v.front() == '[') {
    if (v.back() != ']') MT_USER_ERROR("{} '{}': a list is [0 or 1, ...], one per layer", flag, v);
    std::vector<int> out;
    std::string item;
    for (size_t i = 1; i < v.size(); ++i) {
      const char c = v[i];
      if (c == ',' || c == ']') {
        if (item != "0" && item != "1") MT_USER_ERROR("{} '{}': entries must be 0 or 1, got '{}'", flag, v, item);
        out.push_back(item == "1");
        item.clear();
      } else if (!std::isspace(static_cast<unsigned char>(c))) {
        item += c;
      }
    }
    if (int(out.size()) != num_layers)
      MT_USER_ERROR("{} '{}' has {} entries for --num-layers {}", flag, v, out.size(), num_layers);
    return out;
  }
  int n = 0;
  try {
    size_t used = 0;
    n = std::stoi(v, &used);
    if (used != v.size()) n = 0;
  } catch (const std::exception&) {
    n = 0;
  }
  if (n < 1) MT_USER_ERROR("{} '{}' must be a positive integer or a list such as [1,0,1,1]", flag, v);
  if (n == 1) return {};
  std::vector<int> out(static_cast<size_t>(n), 0);
  out[0] = 1;
  return out;
}

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
         c.untie_embeddings_and_output_weights || c.multi_latent_attention;
}

std::string describe_architecture(const TransformerConfig& c) {
  std::string s = fmt::format("{}, {} MLP, ", normalization_name(c.normalization), c.gated_linear_unit ? "SwiGLU" : "GeLU");
  if (c.multi_latent_attention)
    s += fmt::format("{} heads of multi-latent attention (q LoRA {}, kv LoRA {}, q/k dim {} + RoPE {}, v dim {})",
                     c.num_attention_heads, c.q_lora_rank, c.kv_lora_rank, c.qk_head_dim, c.qk_pos_emb_head_dim,
                     c.v_head_dim);
  else
    s += fmt::format("{} heads in {} query groups of dim {}", c.num_attention_heads, c.query_groups(), c.head_dim());
  if (c.rope_type == RopeType::Yarn)
    s += fmt::format(", YaRN x{:g} over {} (mscale {:g}, all-dim {:g})", c.rotary_scaling_factor,
                     c.original_max_position_embeddings, c.mscale, c.mscale_all_dim);
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
