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
  c.qk_layernorm = f == HfFamily::Qwen3;
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

}  // namespace

HfFamily hf_family_of(const nlohmann::json& j, const std::string& file) {
  const std::string type = j.value("model_type", std::string());
  HfFamily f;
  if (!hf_family_from_model_type(type, f))
    MT_USER_ERROR("{}: model_type \"{}\" is not supported (gpt2, llama, mistral, qwen2, qwen3)", file, type);
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
  j["intermediate_size"] = c.ffn_hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.query_groups();
  j["head_dim"] = c.head_dim();
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = clean(c.layernorm_epsilon);
  j["hidden_act"] = "silu";
  j["attention_dropout"] = clean(c.attention_dropout);
  if (f == HfFamily::Llama || f == HfFamily::Qwen3) j["attention_bias"] = false;
  if (f == HfFamily::Llama) j["mlp_bias"] = false;
  if (c.rotary_percent != 1.0f) j["partial_rotary_factor"] = clean(c.rotary_percent);
  else j.erase("partial_rotary_factor");
  write_rope(c, base, j);
  return j;
}

}  // namespace mt
