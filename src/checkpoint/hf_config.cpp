#include "checkpoint/hf_config.h"

#include <algorithm>

#include "checkpoint/hf_weights.h"
#include "core/error.h"

namespace mt {

namespace {

// Llama 3.1's rope scaling has Meta's constants; another setting would silently differ.
constexpr double kLowFreqFactor = 1.0, kHighFreqFactor = 4.0, kOriginalMaxPositions = 8192.0;

// A float as the shortest decimal that reads back as it (1e-05, not 9.999999747378752e-06).
double clean(float f) { return std::stod(fmt::format("{}", f)); }

const char* torch_dtype(DType d) {
  switch (d) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "float32";
  }
}

// rope_theta and rope scaling: transformers 5 nests them in "rope_parameters", older versions
// keep "rope_theta" and "rope_scaling" at the top level.
void read_rope(const nlohmann::json& j, const std::string& file, TransformerConfig& c) {
  nlohmann::json rp = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"]
                      : j.contains("rope_scaling") && j["rope_scaling"].is_object()     ? j["rope_scaling"]
                                                                                        : nlohmann::json::object();
  c.rotary_base = float(rp.contains("rope_theta") ? rp["rope_theta"].get<double>() : j.value("rope_theta", 10000.0));
  const std::string type = rp.value("rope_type", rp.value("type", std::string("default")));
  if (type == "default") return;
  if (type != "llama3")
    MT_USER_ERROR("{}: rope_type \"{}\" is not supported (default or llama3)", file, type);
  const double low = rp.value("low_freq_factor", kLowFreqFactor), high = rp.value("high_freq_factor", kHighFreqFactor),
               orig = rp.value("original_max_position_embeddings", kOriginalMaxPositions);
  if (low != kLowFreqFactor || high != kHighFreqFactor || orig != kOriginalMaxPositions)
    MT_USER_ERROR("{}: llama3 rope scaling with low_freq_factor {}, high_freq_factor {}, "
                  "original_max_position_embeddings {} is not supported (1, 4 and 8192)",
                  file, low, high, orig);
  c.rope_scaling = true;
  c.rope_scaling_factor = float(hf_json_get<double>(rp, "factor", file));
}

TransformerConfig gpt2_to_ours(const nlohmann::json& j, const std::string& file) {
  const std::string act = j.value("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    MT_USER_ERROR("{}: activation_function \"{}\" is not supported (GPT-2 uses gelu_new, the tanh GeLU)", file, act);
  TransformerConfig c;
  c.hidden_size = hf_json_get<int>(j, "n_embd", file);
  c.num_layers = hf_json_get<int>(j, "n_layer", file);
  c.num_attention_heads = hf_json_get<int>(j, "n_head", file);
  c.max_position_embeddings = hf_json_get<int>(j, "n_positions", file);
  c.seq_length = c.max_position_embeddings;
  c.vocab_size = hf_json_get<int64_t>(j, "vocab_size", file);
  c.ffn_hidden_size = j.contains("n_inner") && !j["n_inner"].is_null() ? j["n_inner"].get<int>() : 4 * c.hidden_size;
  c.layernorm_epsilon = j.value("layer_norm_epsilon", 1e-5f);
  c.init_method_std = j.value("initializer_range", 0.02f);
  c.hidden_dropout = j.value("resid_pdrop", 0.1f);
  c.attention_dropout = j.value("attn_pdrop", 0.1f);
  c.untie_embeddings_and_output_weights = !j.value("tie_word_embeddings", true);
  if (c.hidden_size % c.num_attention_heads != 0)
    MT_USER_ERROR("{}: n_embd {} is not divisible by n_head {}", file, c.hidden_size, c.num_attention_heads);
  return c;
}

// An int key of one of several spellings (the first present); UserError naming the first when none is.
int json_int(const nlohmann::json& j, std::initializer_list<const char*> keys, const std::string& file) {
  for (const char* k : keys)
    if (j.contains(k) && !j[k].is_null()) return hf_json_get<int>(j, k, file);
  return hf_json_get<int>(j, *keys.begin(), file);
}

// Qwen 3 MoE's MoE layers: not in mlp_only_layers, and every decoder_sparse_step-th (1-based).
std::vector<int> qwen3_moe_pattern(int layers, int step, const std::vector<int>& mlp_only) {
  std::vector<int> p(size_t(std::max(layers, 0)), 0);
  for (int l = 0; l < layers; ++l)
    p[size_t(l)] = std::find(mlp_only.begin(), mlp_only.end(), l) == mlp_only.end() && step > 0 && (l + 1) % step == 0;
  return p;
}

// The experts of Mixtral (num_local_experts; intermediate_size is each expert's width, every layer
// MoE; the top-k probabilities renormalised) and Qwen 3 MoE (num_experts, or num_local_experts as
// transformers 5 writes it; moe_intermediate_size; dense layers by mlp_only_layers and
// decoder_sparse_step; norm_topk_prob false: probabilities of the softmax over all experts).
void read_moe(const nlohmann::json& j, const std::string& file, HfFamily f, TransformerConfig& c) {
  const bool qwen = f == HfFamily::Qwen3Moe;
  c.num_moe_experts = qwen ? json_int(j, {"num_experts", "num_local_experts"}, file)
                           : json_int(j, {"num_local_experts", "num_experts"}, file);
  c.moe_router_topk = hf_json_get<int>(j, "num_experts_per_tok", file);
  c.moe_ffn_hidden_size = qwen ? hf_json_get<int>(j, "moe_intermediate_size", file) : c.ffn_hidden_size;
  c.moe_router_pre_softmax = qwen && !j.value("norm_topk_prob", false);
  c.moe_aux_loss_coeff = float(j.value("router_aux_loss_coef", 0.001));
  c.moe_router_load_balancing_type = MoeLoadBalancing::AuxLoss;
  if (c.num_moe_experts <= 0)
    MT_USER_ERROR("{}: {} {} must be positive", file, qwen ? "num_experts" : "num_local_experts", c.num_moe_experts);
  if (c.moe_router_topk < 1 || c.moe_router_topk > c.num_moe_experts)
    MT_USER_ERROR("{}: num_experts_per_tok {} must be between 1 and the {} experts", file, c.moe_router_topk,
                  c.num_moe_experts);
  if (c.moe_ffn_hidden_size <= 0) MT_USER_ERROR("{}: moe_intermediate_size must be positive", file);
  if (!qwen) return;
  std::vector<int> mlp_only;
  if (j.contains("mlp_only_layers") && !j["mlp_only_layers"].is_null()) {
    if (!j["mlp_only_layers"].is_array()) MT_USER_ERROR("{}: \"mlp_only_layers\" is not a list of layers", file);
    for (const auto& v : j["mlp_only_layers"]) {
      if (!v.is_number_integer()) MT_USER_ERROR("{}: \"mlp_only_layers\" is not a list of layers", file);
      mlp_only.push_back(v.get<int>());
    }
  }
  const int step = j.contains("decoder_sparse_step") && !j["decoder_sparse_step"].is_null()
                       ? hf_json_get<int>(j, "decoder_sparse_step", file)
                       : 1;
  if (step < 1) MT_USER_ERROR("{}: decoder_sparse_step {} must be at least 1", file, step);
  const std::vector<int> p = qwen3_moe_pattern(c.num_layers, step, mlp_only);
  if (std::find(p.begin(), p.end(), 0) != p.end()) c.moe_layer_pattern = p;  // else every layer: empty
}

TransformerConfig llama_to_ours(const nlohmann::json& j, const std::string& file, HfFamily f) {
  TransformerConfig c;
  c.num_layers = hf_json_get<int>(j, "num_hidden_layers", file);
  c.hidden_size = hf_json_get<int>(j, "hidden_size", file);
  c.ffn_hidden_size = hf_json_get<int>(j, "intermediate_size", file);
  c.num_attention_heads = hf_json_get<int>(j, "num_attention_heads", file);
  c.num_query_groups = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                           ? j["num_key_value_heads"].get<int>()
                           : c.num_attention_heads;
  c.kv_channels = j.contains("head_dim") && !j["head_dim"].is_null() ? j["head_dim"].get<int>()
                                                                     : c.hidden_size / c.num_attention_heads;
  c.vocab_size = hf_json_get<int64_t>(j, "vocab_size", file);
  c.max_position_embeddings = hf_json_get<int>(j, "max_position_embeddings", file);
  c.seq_length = c.max_position_embeddings;
  // Sliding-window attention (Mistral v0.1) equals full causal attention up to the window.
  if (j.contains("sliding_window") && j["sliding_window"].is_number() && j.value("use_sliding_window", true))
    c.seq_length = std::min(c.seq_length, j["sliding_window"].get<int>());
  c.layernorm_epsilon = j.value("rms_norm_eps", 1e-6f);
  c.init_method_std = j.value("initializer_range", 0.02f);
  c.normalization = Normalization::RMSNorm;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.position_embedding_type = PositionEmbedding::Rope;
  c.rotary_percent = j.value("partial_rotary_factor", 1.0f);
  c.untie_embeddings_and_output_weights = !j.value("tie_word_embeddings", false);
  c.add_bias_linear = false;
  c.add_qkv_bias = f == HfFamily::Qwen2;  // Qwen 2: q, k and v biases, none elsewhere
  c.qk_layernorm = f == HfFamily::Qwen3 || f == HfFamily::Qwen3Moe;
  c.hidden_dropout = 0.0f;
  c.attention_dropout = j.value("attention_dropout", 0.0f);
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") MT_USER_ERROR("{}: hidden_act \"{}\" is not supported (silu)", file, act);
  if (f != HfFamily::Qwen2 && j.value("attention_bias", false))
    MT_USER_ERROR("{}: attention_bias true is not supported (biases on q, k, v and o)", file);
  if (j.value("mlp_bias", false)) MT_USER_ERROR("{}: mlp_bias true is not supported", file);
  if (c.num_query_groups <= 0 || c.num_attention_heads % c.num_query_groups != 0)
    MT_USER_ERROR("{}: num_key_value_heads {} does not divide num_attention_heads {}", file, c.num_query_groups,
                  c.num_attention_heads);
  read_rope(j, file, c);
  if (hf_is_moe_family(f)) read_moe(j, file, f, c);
  return c;
}

void write_rope(const TransformerConfig& c, const nlohmann::json& base, nlohmann::json& j) {
  nlohmann::json scaling = nullptr;
  if (c.rope_scaling)
    scaling = {{"rope_type", "llama3"}, {"factor", clean(c.rope_scaling_factor)}, {"low_freq_factor", kLowFreqFactor},
               {"high_freq_factor", kHighFreqFactor}, {"original_max_position_embeddings", int(kOriginalMaxPositions)}};
  nlohmann::json params = c.rope_scaling ? scaling : nlohmann::json{{"rope_type", "default"}};
  params["rope_theta"] = clean(c.rotary_base);
  const bool has_base = base.is_object() && !base.empty();
  const bool nested = !has_base || base.contains("rope_parameters");
  const bool flat = !has_base || base.contains("rope_theta") || base.contains("rope_scaling");
  if (nested) j["rope_parameters"] = params;
  if (flat || !nested) {
    j["rope_theta"] = clean(c.rotary_base);
    j["rope_scaling"] = scaling;
  }
}

// The MoE keys read_moe reads. Qwen 3 MoE: the expert count under the spelling(s) the base has
// (both without one: transformers 4 reads num_experts, 5 maps it to num_local_experts), and the
// base's decoder_sparse_step / mlp_only_layers when they give our layers, else step 1 and the list.
void write_moe(const TransformerConfig& c, HfFamily f, nlohmann::json& j) {
  j["num_experts_per_tok"] = c.moe_router_topk;
  j["router_aux_loss_coef"] = clean(c.moe_aux_loss_coeff);
  if (f == HfFamily::Mixtral) {
    j["num_local_experts"] = c.num_moe_experts;
    return;
  }
  const bool old_key = j.contains("num_experts"), new_key = j.contains("num_local_experts");
  if (old_key || !new_key) j["num_experts"] = c.num_moe_experts;
  if (new_key || !old_key) j["num_local_experts"] = c.num_moe_experts;
  j["moe_intermediate_size"] = c.moe_ffn_size();
  j["norm_topk_prob"] = !c.moe_router_pre_softmax;
  std::vector<int> ours(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) ours[size_t(l)] = c.is_moe_layer(l);
  std::vector<int> mlp_only;
  int step = 1;
  try {
    if (j.contains("mlp_only_layers") && j["mlp_only_layers"].is_array())
      mlp_only = j["mlp_only_layers"].get<std::vector<int>>();
    if (j.contains("decoder_sparse_step") && j["decoder_sparse_step"].is_number_integer())
      step = j["decoder_sparse_step"].get<int>();
  } catch (const nlohmann::json::exception&) {
    mlp_only.clear();
  }
  if (qwen3_moe_pattern(c.num_layers, step, mlp_only) == ours) {
    if (!j.contains("decoder_sparse_step")) j["decoder_sparse_step"] = step;
    if (!j.contains("mlp_only_layers")) j["mlp_only_layers"] = mlp_only;
    return;
  }
  mlp_only.clear();
  for (int l = 0; l < c.num_layers; ++l)
    if (!ours[size_t(l)]) mlp_only.push_back(l);
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = mlp_only;
}

}  // namespace

HfFamily hf_family_of(const nlohmann::json& j, const std::string& file) {
  const std::string type = j.value("model_type", std::string());
  HfFamily f;
  if (!hf_family_from_model_type(type, f))
    MT_USER_ERROR("{}: model_type \"{}\" is not supported (gpt2, llama, mistral, qwen2, qwen3, mixtral, qwen3_moe)",
                  file, type);
  return f;
}

TransformerConfig hf_config_to_ours(const nlohmann::json& j, const std::string& file) {
  const HfFamily f = hf_family_of(j, file);
  TransformerConfig c = f == HfFamily::Gpt2 ? gpt2_to_ours(j, file) : llama_to_ours(j, file, f);
  c.padded_vocab_size = c.vocab_size;
  if (c.num_layers <= 0 || c.hidden_size <= 0 || c.ffn_hidden_size <= 0 || c.num_attention_heads <= 0 ||
      c.vocab_size <= 0 || c.max_position_embeddings <= 0 || c.head_dim() <= 0)
    MT_USER_ERROR("{}: layers, sizes, heads, vocabulary and positions must be positive", file);
  return c;
}

nlohmann::json hf_config_from_ours(const TransformerConfig& c, HfFamily f, DType dtype, const nlohmann::json& base) {
  nlohmann::json j = base.is_object() ? base : nlohmann::json::object();
  j["architectures"] = {hf_architecture(f)};
  j["model_type"] = hf_model_type(f);
  j["vocab_size"] = c.vocab_size;
  j["initializer_range"] = clean(c.init_method_std);
  j["tie_word_embeddings"] = !c.untie_embeddings_and_output_weights;
  j["dtype"] = torch_dtype(dtype);
  if (j.contains("torch_dtype") || !base.is_object()) j["torch_dtype"] = torch_dtype(dtype);
  if (f == HfFamily::Gpt2) {
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_attention_heads;
    j["n_positions"] = c.max_position_embeddings;
    j["n_inner"] = c.ffn_hidden_size == 4 * c.hidden_size ? nlohmann::json(nullptr) : nlohmann::json(c.ffn_hidden_size);
    j["activation_function"] = j.value("activation_function", std::string("gelu_new"));
    j["layer_norm_epsilon"] = clean(c.layernorm_epsilon);
    j["resid_pdrop"] = clean(c.hidden_dropout);
    j["embd_pdrop"] = clean(c.hidden_dropout);
    j["attn_pdrop"] = clean(c.attention_dropout);
    return j;
  }
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = f == HfFamily::Mixtral ? c.moe_ffn_size() : c.ffn_hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.query_groups();
  // Mixtral's config leaves head_dim null for hidden / heads: a base that does keeps it so.
  const bool default_head_dim = c.head_dim() * c.num_attention_heads == c.hidden_size;
  if (!(default_head_dim && j.contains("head_dim") && j["head_dim"].is_null())) j["head_dim"] = c.head_dim();
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = clean(c.layernorm_epsilon);
  j["hidden_act"] = "silu";
  j["attention_dropout"] = clean(c.attention_dropout);
  if (f == HfFamily::Llama || f == HfFamily::Qwen3 || f == HfFamily::Qwen3Moe) j["attention_bias"] = false;
  if (f == HfFamily::Llama) j["mlp_bias"] = false;
  if (c.rotary_percent != 1.0f) j["partial_rotary_factor"] = clean(c.rotary_percent);
  else j.erase("partial_rotary_factor");
  write_rope(c, base, j);
  if (hf_is_moe_family(f)) write_moe(c, f, j);
  return j;
}

}  // namespace mt
