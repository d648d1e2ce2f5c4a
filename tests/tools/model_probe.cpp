// Test tool for the PyTorch reference tests (tests/python/test_llama_reference.py), not a user
// command: builds our GPTModel from CONFIG.json (TransformerConfig's field names), copies every
// parameter from WEIGHTS.safetensors (our names and global shapes, fp32), and writes, for the
// batch in INPUT.safetensors ("input_ids", "labels": int64 [B, T]), a safetensors file with
//   "logits" [B, T, vocab] (fp32, eval mode), "loss" [1] (mean cross-entropy), and the gradient
//   of that loss for every parameter under "grad.<our name>".
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "model/gpt_model.h"
#include "probe_output.h"

using namespace mt;

namespace {

TransformerConfig read_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) MT_USER_ERROR("{}: cannot open", path);
  const nlohmann::json j = nlohmann::json::parse(f);
  TransformerConfig c;
  c.num_layers = j.at("num_layers");
  c.hidden_size = j.at("hidden_size");
  c.ffn_hidden_size = j.at("ffn_hidden_size");
  c.num_attention_heads = j.at("num_attention_heads");
  c.num_query_groups = j.value("num_query_groups", 0);
  c.kv_channels = j.value("kv_channels", 0);
  c.seq_length = j.at("seq_length");
  c.max_position_embeddings = j.value("max_position_embeddings", c.seq_length);
  c.vocab_size = j.at("vocab_size");
  c.padded_vocab_size = j.at("padded_vocab_size");
  c.layernorm_epsilon = j.value("layernorm_epsilon", 1e-5f);
  c.normalization = j.value("normalization", std::string("LayerNorm")) == "RMSNorm" ? Normalization::RMSNorm
                                                                                     : Normalization::LayerNorm;
  c.gated_linear_unit = j.value("swiglu", false);
  c.activation = c.gated_linear_unit ? Activation::Silu : Activation::Gelu;
  c.add_bias_linear = j.value("add_bias_linear", true);
  c.add_qkv_bias = j.value("add_qkv_bias", false);
  c.qk_layernorm = j.value("qk_layernorm", false);
  const std::string pos = j.value("position_embedding_type", std::string("learned_absolute"));
  c.position_embedding_type = pos == "rope"   ? PositionEmbedding::Rope
                              : pos == "none" ? PositionEmbedding::None
                                              : PositionEmbedding::LearnedAbsolute;
  c.rotary_base = j.value("rotary_base", 10000.0f);
  c.rotary_percent = j.value("rotary_percent", 1.0f);
  c.rope_scaling = j.value("rope_scaling", false);
  c.rope_scaling_factor = j.value("rope_scaling_factor", 8.0f);
  c.untie_embeddings_and_output_weights = j.value("untie_embeddings_and_output_weights", false);
  c.hidden_dropout = c.attention_dropout = 0.0f;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: model_probe CONFIG.json WEIGHTS.safetensors INPUT.safetensors OUTPUT.safetensors\n");
    return 2;
  }
  try {
    const TransformerConfig cfg = read_config(argv[1]);
    GPTModel model(cfg, Device::cpu());
    SafetensorsReader weights(argv[2]);
    ParamAndGradBuffer& buf = model.buffer();
    for (const ParamInfo& p : buf.infos()) {
      Tensor w = weights.get(p.name);
      if (w.shape() != p.global_shape)
        MT_USER_ERROR("{}: {} is {}, the model's is {}", argv[2], p.name, shape_str(w.shape()),
                      shape_str(p.global_shape));
      buf.param(buf.find(p.name)).copy_from(w.view(p.shape));
    }
    SafetensorsReader in(argv[3]);
    Tensor tokens = probe::token_ids(in.get("input_ids")), labels = probe::token_ids(in.get("labels"));
    probe::write_output(model, tokens, labels, argv[4]);
  } catch (const UserError& e) {
    std::fprintf(stderr, "model_probe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
