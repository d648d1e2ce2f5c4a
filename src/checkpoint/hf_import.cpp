#include "checkpoint/hf_import.h"

#include <algorithm>
#include <filesystem>

#include "checkpoint/hf_gpt2.h"
#include "checkpoint/hf_weights.h"

namespace mt {

namespace {

bool is_gpt2(const nlohmann::json& j) { return j.value("model_type", std::string()) == "gpt2"; }

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
  // Our Llama 3.1 scaling has Meta's constants; another setting would silently differ.
  const double low = rp.value("low_freq_factor", 1.0), high = rp.value("high_freq_factor", 4.0),
               orig = rp.value("original_max_position_embeddings", 8192.0);
  if (low != 1.0 || high != 4.0 || orig != 8192.0)
    MT_USER_ERROR("{}: llama3 rope scaling with low_freq_factor {}, high_freq_factor {}, "
                  "original_max_position_embeddings {} is not supported (1, 4 and 8192)",
                  file, low, high, orig);
  c.rope_scaling = true;
  c.rope_scaling_factor = float(hf_json_get<double>(rp, "factor", file));
}

TransformerConfig read_llama_family(const nlohmann::json& j, const std::string& file) {
  const std::string type = j.value("model_type", std::string());
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
  c.add_qkv_bias = type == "qwen2";  // Qwen 2: q, k and v biases, none elsewhere
  c.qk_layernorm = type == "qwen3";
  c.hidden_dropout = c.attention_dropout = 0.0f;
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") MT_USER_ERROR("{}: hidden_act \"{}\" is not supported (silu)", file, act);
  if (type != "qwen2" && j.value("attention_bias", false))
    MT_USER_ERROR("{}: attention_bias true is not supported (biases on q, k, v and o)", file);
  if (j.value("mlp_bias", false)) MT_USER_ERROR("{}: mlp_bias true is not supported", file);
  if (c.num_attention_heads % c.num_query_groups != 0)
    MT_USER_ERROR("{}: num_key_value_heads {} does not divide num_attention_heads {}", file, c.num_query_groups,
                  c.num_attention_heads);
  read_rope(j, file, c);
  return c;
}

// Megatron's linear_qkv rows [G, (H/G q heads, k, v), D] from q [H D, ...], k and v [G D, ...].
Tensor fuse_qkv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t G, int64_t D) {
  const int64_t cols = q.numel() / (H * D), per = H / G;
  Tensor out = Tensor::empty({(H + 2 * G) * D * cols}, DType::F32);
  float* o = out.data<float>();
  const int64_t head = D * cols;  // one head's elements
  for (int64_t g = 0; g < G; ++g) {
    float* dst = o + g * (per + 2) * head;
    std::copy_n(q.data<float>() + g * per * head, per * head, dst);
    std::copy_n(k.data<float>() + g * head, head, dst + per * head);
    std::copy_n(v.data<float>() + g * head, head, dst + (per + 1) * head);
  }
  return cols == 1 ? out.view({(H + 2 * G) * D}) : out.view({(H + 2 * G) * D, cols});
}

void load_llama_family(const std::string& dir, GPTModel& model) {
  const TransformerConfig& c = model.config();
  HfWeights src(dir);
  auto& buf = model.buffer();
  auto dst = [&](const std::string& name) {
    const int id = buf.find(name);
    MT_CHECK(id >= 0, "no parameter {}", name);
    return buf.param(id);
  };
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, H = c.num_attention_heads, G = c.query_groups(),
                D = c.head_dim();
  auto vocab_rows = [&](const std::string& key) {  // padding rows beyond the real vocabulary are zero
    Tensor t = Tensor::zeros({c.padded_vocab_size, C}, DType::F32);
    t.narrow0(0, c.vocab_size).copy_from(src.get(key, {c.vocab_size, C}));
    return t;
  };
  assign_param(vocab_rows("model.embed_tokens.weight"), dst("embedding.word_embeddings.weight"));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".", p = "decoder.layers." + std::to_string(l) + ".";
    assign_param(src.get(h + "input_layernorm.weight", {C}), dst(p + "input_layernorm.weight"));
    const std::string a = h + "self_attn.";
    assign_param(fuse_qkv(src.get(a + "q_proj.weight", {H * D, C}), src.get(a + "k_proj.weight", {G * D, C}),
                          src.get(a + "v_proj.weight", {G * D, C}), H, G, D),
                 dst(p + "self_attention.linear_qkv.weight"));
    if (c.add_qkv_bias)
      assign_param(fuse_qkv(src.get(a + "q_proj.bias", {H * D}), src.get(a + "k_proj.bias", {G * D}),
                            src.get(a + "v_proj.bias", {G * D}), H, G, D),
                   dst(p + "self_attention.linear_qkv.bias"));
    if (c.qk_layernorm) {
      assign_param(src.get(a + "q_norm.weight", {D}), dst(p + "self_attention.q_layernorm.weight"));
      assign_param(src.get(a + "k_norm.weight", {D}), dst(p + "self_attention.k_layernorm.weight"));
    }
    assign_param(src.get(a + "o_proj.weight", {C, H * D}), dst(p + "self_attention.linear_proj.weight"));
    assign_param(src.get(h + "post_attention_layernorm.weight", {C}), dst(p + "pre_mlp_layernorm.weight"));
    Tensor fc1 = Tensor::empty({2, F, C}, DType::F32);  // [gate; up]
    fc1.narrow0(0, 1).copy_from(src.get(h + "mlp.gate_proj.weight", {F, C}).view({1, F, C}));
    fc1.narrow0(1, 1).copy_from(src.get(h + "mlp.up_proj.weight", {F, C}).view({1, F, C}));
    assign_param(fc1, dst(p + "mlp.linear_fc1.weight"));
    assign_param(src.get(h + "mlp.down_proj.weight", {C, F}), dst(p + "mlp.linear_fc2.weight"));
  }
  assign_param(src.get("model.norm.weight", {C}), dst("decoder.final_layernorm.weight"));
  if (c.untie_embeddings_and_output_weights) assign_param(vocab_rows("lm_head.weight"), dst("output_layer.weight"));
}

}  // namespace

TransformerConfig read_hf_config(const std::string& dir, DType params_dtype, int64_t divisible_by) {
  const nlohmann::json j = read_hf_config_json(dir);
  const std::string file = (std::filesystem::path(dir) / "config.json").string();
  if (is_gpt2(j)) return read_hf_gpt2_config(dir, params_dtype, divisible_by);
  const std::string type = j.value("model_type", std::string());
  if (type != "llama" && type != "mistral" && type != "qwen2" && type != "qwen3")
    MT_USER_ERROR("{}: model_type \"{}\" is not supported (gpt2, llama, mistral, qwen2, qwen3)", file, type);
  TransformerConfig c = read_llama_family(j, file);
  c.padded_vocab_size = pad_vocab_size(c.vocab_size, divisible_by);
  c.params_dtype = params_dtype;
  return c;
}

void load_hf_weights(const std::string& dir, GPTModel& model) {
  MT_CHECK(model.parallel().tp_size() == 1 && model.chunk().pre_process && model.chunk().post_process &&
               model.chunk().first_layer == 0,
           "load_hf_weights: a single-rank whole model");
  if (is_gpt2(read_hf_config_json(dir))) {
    load_hf_gpt2_weights(dir, model);
    return;
  }
  load_llama_family(dir, model);
}

}  // namespace mt
