#include "inference/model_loader.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/megatron_lm_convert.h"
#include "checkpoint/recorded_moe_args.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/json_depth.h"
#include "kernels/elementwise.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

// An id or a list of ids (Hugging Face writes either); empty when absent or null.
std::vector<int32_t> token_ids(const nlohmann::json& j, const char* key) {
  std::vector<int32_t> ids;
  if (!j.contains(key) || j[key].is_null()) return ids;
  if (j[key].is_number_integer()) ids.push_back(j[key].get<int32_t>());
  if (j[key].is_array())
    for (const auto& v : j[key])
      if (v.is_number_integer()) ids.push_back(v.get<int32_t>());
  return ids;
}

nlohmann::json read_json(const fs::path& file) {
  const std::string text = read_regular_file(file.string());
  check_json_depth(text, file.string());
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    MT_USER_ERROR("{}: not valid JSON ({})", file.string(), e.what());
  }
}

// Megatron-Core's parameter names whose rows are the (padded) vocabulary: checkpoints store only
// the real vocabulary's rows.
bool vocab_rows(const ParamInfo& p) {
  return p.name == "embedding.word_embeddings.weight" || p.name == "output_layer.weight";
}

// The architecture our trainer records in common.json "args" (train/checkpointing.cpp's
// args_to_json); keys missing from older checkpoints take GPT-2's values, as the flags default.
TransformerConfig config_from_args(const nlohmann::json& a, const std::string& file, DType dtype, int tp) {
  auto need = [&](const char* key) {
    if (!a.contains(key) || !a[key].is_number()) MT_USER_ERROR("{}: args has no \"{}\"", file, key);
    return a[key];
  };
  // Multi-latent attention trains but has no KV cache yet (TransformerLayer::forward_inference).
  if (a.value("multi_latent_attention", false))
    MT_USER_ERROR("{}: generation with multi-latent attention (--multi-latent-attention) is not supported yet", file);
  TransformerConfig c;
  c.num_layers = need("num_layers").get<int>();
  c.hidden_size = need("hidden_size").get<int>();
  c.num_attention_heads = need("num_attention_heads").get<int>();
  c.seq_length = need("seq_length").get<int>();
  c.vocab_size = need("vocab_size").get<int64_t>();
  c.ffn_hidden_size = a.value("ffn_hidden_size", 4 * c.hidden_size);
  c.max_position_embeddings = a.value("max_position_embeddings", c.seq_length);
  c.num_query_groups = a.value("num_query_groups", c.num_attention_heads);
  c.kv_channels = a.value("kv_channels", 0);
  c.layernorm_epsilon = a.value("layernorm_epsilon", c.layernorm_epsilon);
  const std::string norm = a.value("normalization", std::string("LayerNorm"));
  if (norm != "LayerNorm" && norm != "RMSNorm") MT_USER_ERROR("{}: normalization \"{}\" is not supported", file, norm);
  c.normalization = norm == "RMSNorm" ? Normalization::RMSNorm : Normalization::LayerNorm;
  c.gated_linear_unit = a.value("swiglu", false);
  c.activation = c.gated_linear_unit ? Activation::Silu : Activation::Gelu;
  c.add_bias_linear = !a.value("disable_bias_linear", false);
  c.add_qkv_bias = a.value("add_qkv_bias", false);
  c.qk_layernorm = a.value("qk_layernorm", false);
  const std::string pos = a.value("position_embedding_type", std::string("learned_absolute"));
  c.position_embedding_type = pos == "rope"   ? PositionEmbedding::Rope
                              : pos == "none" ? PositionEmbedding::None
                                              : PositionEmbedding::LearnedAbsolute;
  c.rotary_base = a.value("rotary_base", c.rotary_base);
  c.rotary_percent = a.value("rotary_percent", c.rotary_percent);
  c.rope_scaling = a.value("use_rope_scaling", false);
  c.rope_scaling_factor = a.value("rope_scaling_factor", c.rope_scaling_factor);
  c.untie_embeddings_and_output_weights = a.value("untie_embeddings_and_output_weights", false);
  c.padded_vocab_size = pad_vocab_size(c.vocab_size, a.value("make_vocab_size_divisible_by", int64_t(128)) * tp);
  c.hidden_dropout = c.attention_dropout = 0.0f;
  read_recorded_moe_args(a, c);  // the experts, as the run recorded them
  c.params_dtype = dtype;
  return c;
}

// The tokenizer a training run recorded, when its files can still be found.
void recorded_tokenizer(LoadedModel& m, const nlohmann::json& a) {
  TokenizerOptions o;
  o.type = a.value("tokenizer_type", std::string());
  o.vocab_file = a.value("vocab_file", std::string());
  o.merge_file = a.value("merge_file", std::string());
  o.model = a.value("tokenizer_model", std::string());
  o.vocab_size = a.value("vocab_size", int64_t(0));
  if (o.type.empty() || o.type == "NullTokenizer") return;
  for (const std::string& f : {o.vocab_file, o.merge_file, o.model})
    if (!f.empty() && !fs::exists(f)) return;  // moved or relative to another directory: ids only
  m.tokenizer = build_tokenizer(o);
  m.tokenizer_source = o.type + (o.model.empty() ? "" : " " + o.model);
}

// Copies each parameter of `model` (one tensor-parallel rank's shard) from the same parameter of
// `whole` (a single-rank host model of the same config): the slice [shard_start, + local size)
// along the shard dimension of the whole tensor, or all of a replicated one; the experts' too.
void copy_buffer_shards(const ParamAndGradBuffer& src, ParamAndGradBuffer& dst);

void copy_shards(const GPTModel& whole, GPTModel& model) {
  copy_buffer_shards(whole.buffer(), model.buffer());
  MT_CHECK(!whole.expert_buffer() == !model.expert_buffer(), "copy_shards: experts on one side only");
  if (model.expert_buffer()) copy_buffer_shards(*whole.expert_buffer(), *model.expert_buffer());
}

void copy_buffer_shards(const ParamAndGradBuffer& src, ParamAndGradBuffer& dst) {
  for (int id = 0; id < int(dst.infos().size()); ++id) {
    const ParamInfo& p = dst.info(id);
    const Tensor full = src.param(src.find(p.name));
    MT_CHECK(full.numel() == shape_numel(p.global_shape), "{}: {} vs global shape {}", p.name, full.str(),
             shape_str(p.global_shape));
    Tensor part = Tensor::empty(p.shape, full.dtype());
    if (p.shard_dim < 0) {
      part.copy_from(full.view(p.shape));
    } else {  // [outer, global dim, inner] -> rows [shard_start, + local dim) of the middle
      int64_t outer = 1, inner = 1;
      for (int d = 0; d < p.shard_dim; ++d) outer *= p.global_shape[size_t(d)];
      for (size_t d = size_t(p.shard_dim) + 1; d < p.global_shape.size(); ++d) inner *= p.global_shape[d];
      const int64_t whole_rows = p.global_shape[size_t(p.shard_dim)], rows = p.shape[size_t(p.shard_dim)];
      const Tensor f = full.view({outer * whole_rows * inner});
      for (int64_t o = 0; o < outer; ++o)
        part.view({outer * rows * inner})
            .flat_slice(o * rows * inner, rows * inner, {rows * inner})
            .copy_from(f.flat_slice((o * whole_rows + p.shard_start) * inner, rows * inner, {rows * inner}));
    }
    Tensor cast_part = Tensor::empty(p.shape, dst.param(id).dtype());
    cast(part, cast_part);
    dst.param(id).copy_from(cast_part);
  }
}

}  // namespace

void set_tokenizer(LoadedModel& m, const std::string& path) {
  if (!fs::exists(path)) MT_USER_ERROR("--tokenizer-model {}: no such file or directory", path);
  TokenizerOptions o;
  o.type = "HuggingFaceTokenizer";
  o.model = path;
  m.tokenizer = build_tokenizer(o);
  m.tokenizer_source = path;
}

LoadedModel load_hf_model(const std::string& dir, DType dtype, Device device, const ModelParallelConfig& par) {
  if (!fs::is_directory(dir)) MT_USER_ERROR("--load-hf {}: not a directory", dir);
  LoadedModel m;
  const TransformerConfig cfg = read_hf_config(dir, dtype, 128 * par.tp_size());
  m.model = std::make_unique<GPTModel>(cfg, device, par);
  if (par.tp_size() == 1) {
    load_hf_weights(dir, *m.model);
  } else {
    TransformerConfig whole_cfg = cfg;
    whole_cfg.params_dtype = DType::F32;
    GPTModel whole(whole_cfg, Device::cpu());
    load_hf_weights(dir, whole);
    copy_shards(whole, *m.model);
  }
  // read_hf_config's seq_length: max_position_embeddings, or Mistral's sliding window (past it
  // Hugging Face attends to a window only, which we do not).
  m.max_sequence_length = std::min<int64_t>(cfg.seq_length, cfg.max_position_embeddings);
  const nlohmann::json config = read_json(fs::path(dir) / "config.json");
  const fs::path gen = fs::path(dir) / "generation_config.json";
  const nlohmann::json generation = fs::exists(gen) ? read_json(gen) : nlohmann::json::object();
  m.eos_ids = token_ids(generation, "eos_token_id");
  if (m.eos_ids.empty()) m.eos_ids = token_ids(config, "eos_token_id");
  std::vector<int32_t> bos = token_ids(generation, "bos_token_id");
  if (bos.empty()) bos = token_ids(config, "bos_token_id");
  if (!bos.empty()) m.bos_id = bos[0];
  if (fs::exists(fs::path(dir) / "tokenizer.json")) set_tokenizer(m, (fs::path(dir) / "tokenizer.json").string());
  return m;
}

namespace {

// A Megatron-LM checkpoint (megatron_lm_import.h), converted on the fly: every rank reads the
// whole tensors and keeps its shard.
LoadedModel load_megatron_lm_model(const std::string& dir, DType dtype, Device device, const ModelParallelConfig& par) {
  const MegatronLmCheckpoint mlm(dir);
  mlm.check();
  TransformerConfig cfg = mlm.config();
  cfg.params_dtype = dtype;
  cfg.padded_vocab_size = pad_vocab_size(cfg.vocab_size, 128 * par.tp_size());
  cfg.hidden_dropout = cfg.attention_dropout = 0.0f;
  LoadedModel m;
  m.model = std::make_unique<GPTModel>(cfg, device, par);
  load_megatron_lm_weights_into(mlm, m.model->buffer());
  m.max_sequence_length = cfg.max_position_embeddings;
  nlohmann::json tok = nlohmann::json::object();  // the run's tokenizer, when its files are still there
  for (const char* k : {"tokenizer_type", "vocab_file", "merge_file", "tokenizer_model"})
    if (mlm.args().contains(k) && mlm.args()[k].is_string()) tok[k] = mlm.args()[k];
  if (mlm.args().contains("vocab_size") && mlm.args()["vocab_size"].is_number_integer())
    tok["vocab_size"] = mlm.args()["vocab_size"];
  recorded_tokenizer(m, tok);
  if (m.tokenizer) {
    if (m.tokenizer->eod() >= 0) m.eos_ids.push_back(m.tokenizer->eod());
    m.bos_id = m.tokenizer->bos();
  }
  return m;
}

}  // namespace

LoadedModel load_checkpoint_model(const std::string& dir, DType dtype, Device device, const ModelParallelConfig& par) {
  if (!fs::exists(dir)) MT_USER_ERROR("--load {}: no such directory", dir);
  if (is_megatron_lm_checkpoint(dir)) return load_megatron_lm_model(dir, dtype, device, par);
  CheckpointReader ck(dir);
  const std::string common_file = ck.path() + "/common.json";
  if (!ck.common().contains("args") || !ck.common()["args"].is_object())
    MT_USER_ERROR("{}: no \"args\" (the run's arguments, which give the model's architecture)", common_file);
  const nlohmann::json& args = ck.common()["args"];
  LoadedModel m;
  const TransformerConfig cfg = config_from_args(args, common_file, dtype, par.tp_size());
  m.model = std::make_unique<GPTModel>(cfg, device, par);
  ParamAndGradBuffer& buf = m.model->buffer();
  // An fp32 model takes the fp32 master weights of a bf16/fp16 run when they are there.
  const bool from_master = dtype == DType::F32 && ck.contains("optimizer.master." + buf.infos().front().name);
  std::vector<ShardedTensor> requests;
  std::vector<std::pair<std::vector<FlatTensorLayout>, ParamAndGradBuffer*>> layouts;
  for (ParamAndGradBuffer* b : {&buf, m.model->expert_buffer()}) {  // the experts' too (MoE)
    if (!b) continue;
    std::vector<FlatTensorLayout> layout;
    for (const ParamInfo& p : b->infos())
      layout.push_back(FlatTensorLayout{p.name, p.shape, p.offset, p.global_shape, p.shard_dim, p.shard_start,
                                        vocab_rows(p) ? cfg.vocab_size : -1});
    for (auto& t : shard_flat_buffer(layout, from_master ? "optimizer.master." : "", b->params(), 0, 0, par.tp_rank()))
      requests.push_back(std::move(t));
    layouts.emplace_back(std::move(layout), b);
  }
  // The routers' expert biases (aux-loss-free balancing), which choose the experts.
  for (const auto& [name, t] : m.model->persistent_buffers())
    if (ck.contains(name)) requests.push_back(ShardedTensor::whole(name, t));
  ck.load(requests);
  for (const auto& [layout, b] : layouts) zero_unstored_rows(layout, b->params(), 0);
  m.max_sequence_length = cfg.max_position_embeddings;
  recorded_tokenizer(m, args);
  if (m.tokenizer) {
    if (m.tokenizer->eod() >= 0) m.eos_ids.push_back(m.tokenizer->eod());
    m.bos_id = m.tokenizer->bos();
  }
  return m;
}

}  // namespace mt
