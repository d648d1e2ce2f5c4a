#include "checkpoint/hf_gpt2.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <vector>

#include "checkpoint/hf_weights.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "kernels/elementwise.h"

namespace mt {
namespace {

// dst[r, c] = src[c, r] for src [rows, cols] fp32 -> dst (any dtype) [cols, rows].
void copy_transposed(const Tensor& src, const Tensor& dst) {
  int64_t rows = src.size(0), cols = src.size(1);
  Tensor t = Tensor::empty({cols, rows}, DType::F32);
  const float* s = src.data<float>();
  float* d = t.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) d[c * rows + r] = s[r * cols + c];
  assign_param(t, dst);
}

}  // namespace

TransformerConfig read_hf_gpt2_config(const std::string& dir, DType dtype, int64_t divisible_by) {
  const std::string file = (std::filesystem::path(dir) / "config.json").string();
  const nlohmann::json j = read_hf_config_json(dir);
  std::string act = j.value("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    MT_USER_ERROR("{}: activation_function \"{}\" is not supported (GPT-2 uses gelu_new, the tanh GeLU)", file, act);
  TransformerConfig c;
  c.hidden_size = hf_json_get<int>(j, "n_embd", file);
  c.num_layers = hf_json_get<int>(j, "n_layer", file);
  c.num_attention_heads = hf_json_get<int>(j, "n_head", file);
  c.max_position_embeddings = hf_json_get<int>(j, "n_positions", file);
  c.seq_length = c.max_position_embeddings;
  c.vocab_size = hf_json_get<int64_t>(j, "vocab_size", file);
  c.padded_vocab_size = pad_vocab_size(c.vocab_size, divisible_by);
  c.ffn_hidden_size = j.contains("n_inner") && !j["n_inner"].is_null() ? j["n_inner"].get<int>() : 4 * c.hidden_size;
  c.layernorm_epsilon = j.value("layer_norm_epsilon", 1e-5f);
  c.init_method_std = j.value("initializer_range", 0.02f);
  c.params_dtype = dtype;
  if (c.hidden_size % c.num_attention_heads != 0)
    MT_USER_ERROR("{}: n_embd {} is not divisible by n_head {}", file, c.hidden_size, c.num_attention_heads);
  return c;
}

void load_hf_gpt2_weights(const std::string& dir, GPTModel& model) {
  const TransformerConfig& c = model.config();
  // transformers saves GPT2LMHeadModel keys as "transformer.h.0..."; GPT2Model without prefix.
  HfWeights src(dir, {"transformer.", ""});
  auto& buf = model.buffer();
  auto dst = [&](const std::string& name) { return buf.param(buf.find(name)); };
  const int64_t C = c.hidden_size, F = c.ffn_hidden_size, H = c.num_attention_heads, D = c.head_dim();

  // Word embeddings: rows beyond the real vocabulary (padding) are zero.
  Tensor wte = Tensor::zeros({c.padded_vocab_size, C}, DType::F32);
  wte.narrow0(0, c.vocab_size).copy_from(src.get("wte.weight", {c.vocab_size, C}));
  assign_param(wte, dst("embedding.word_embeddings.weight"));
  assign_param(src.get("wpe.weight", {c.max_position_embeddings, C}), dst("embedding.position_embeddings.weight"));

  for (int l = 0; l < c.num_layers; ++l) {
    std::string h = "h." + std::to_string(l) + ".", p = "decoder.layers." + std::to_string(l) + ".";
    assign_param(src.get(h + "ln_1.weight", {C}), dst(p + "input_layernorm.weight"));
    assign_param(src.get(h + "ln_1.bias", {C}), dst(p + "input_layernorm.bias"));
    assign_param(src.get(h + "ln_2.weight", {C}), dst(p + "pre_mlp_layernorm.weight"));
    assign_param(src.get(h + "ln_2.bias", {C}), dst(p + "pre_mlp_layernorm.bias"));

    // QKV: HF column j*C + hh*D + d  ->  our row (hh*3 + j)*D + d.
    Tensor w = src.get(h + "attn.c_attn.weight", {C, 3 * C}), b = src.get(h + "attn.c_attn.bias", {3 * C});
    Tensor wq = Tensor::empty({3 * C, C}, DType::F32), bq = Tensor::empty({3 * C}, DType::F32);
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t hh = 0; hh < H; ++hh)
        for (int64_t d = 0; d < D; ++d) {
          int64_t col = j * C + hh * D + d, row = (hh * 3 + j) * D + d;
          for (int64_t i = 0; i < C; ++i) wq.data<float>()[row * C + i] = w.data<float>()[i * 3 * C + col];
          bq.data<float>()[row] = b.data<float>()[col];
        }
    assign_param(wq, dst(p + "self_attention.linear_qkv.weight"));
    assign_param(bq, dst(p + "self_attention.linear_qkv.bias"));
    copy_transposed(src.get(h + "attn.c_proj.weight", {C, C}), dst(p + "self_attention.linear_proj.weight"));
    assign_param(src.get(h + "attn.c_proj.bias", {C}), dst(p + "self_attention.linear_proj.bias"));
    copy_transposed(src.get(h + "mlp.c_fc.weight", {C, F}), dst(p + "mlp.linear_fc1.weight"));
    assign_param(src.get(h + "mlp.c_fc.bias", {F}), dst(p + "mlp.linear_fc1.bias"));
    copy_transposed(src.get(h + "mlp.c_proj.weight", {F, C}), dst(p + "mlp.linear_fc2.weight"));
    assign_param(src.get(h + "mlp.c_proj.bias", {C}), dst(p + "mlp.linear_fc2.bias"));
  }
  assign_param(src.get("ln_f.weight", {C}), dst("decoder.final_layernorm.weight"));
  assign_param(src.get("ln_f.bias", {C}), dst("decoder.final_layernorm.bias"));
}

}  // namespace mt
