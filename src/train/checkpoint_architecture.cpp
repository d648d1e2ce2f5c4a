#include "train/checkpoint_architecture.h"

#include <charconv>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_location.h"
#include "checkpoint/megatron_lm_import.h"
#include "checkpoint/recorded_moe_args.h"
#include "checkpoint/hf_import.h"
#include "core/error.h"
#include "train/arguments.h"
#include "train/checkpointing.h"
#include "train/moe_args.h"

namespace mt {

namespace {

enum class Kind { Int, Float, String, Switch };

struct ArchFlag {
  const char* key;   // in the recorded args
  const char* flag;  // Megatron's spelling
  Kind kind;
  bool shape;  // must agree with the checkpoint (train/checkpointing.cpp's check_args_match keys)
  bool moe = false;  // only for a model with experts (recorded num_experts > 0)
  const char* implied = nullptr;  // a value left out (the flag's default)
};

// --num-query-groups and --group-query-attention are handled apart (one key, two flags).
const std::vector<ArchFlag>& arch_flags() {
  static const std::vector<ArchFlag> flags = {
      {"num_layers", "--num-layers", Kind::Int, true},
      {"hidden_size", "--hidden-size", Kind::Int, true},
      {"ffn_hidden_size", "--ffn-hidden-size", Kind::Int, true},
      {"num_attention_heads", "--num-attention-heads", Kind::Int, true},
      {"kv_channels", "--kv-channels", Kind::Int, true},
      {"max_position_embeddings", "--max-position-embeddings", Kind::Int, true},
      {"vocab_size", "--vocab-size", Kind::Int, true},
      {"normalization", "--normalization", Kind::String, true},
      {"swiglu", "--swiglu", Kind::Switch, true},
      {"position_embedding_type", "--position-embedding-type", Kind::String, true},
      {"rotary_base", "--rotary-base", Kind::Float, true},
      {"rotary_percent", "--rotary-percent", Kind::Float, true},
      {"use_rope_scaling", "--use-rope-scaling", Kind::Switch, true},
      {"rope_scaling_factor", "--rope-scaling-factor", Kind::Float, true},
      {"untie_embeddings_and_output_weights", "--untie-embeddings-and-output-weights", Kind::Switch, true},
      {"disable_bias_linear", "--disable-bias-linear", Kind::Switch, true},
      {"add_qkv_bias", "--add-qkv-bias", Kind::Switch, true},
      {"qk_layernorm", "--qk-layernorm", Kind::Switch, true},
      {"multi_latent_attention", "--multi-latent-attention", Kind::Switch, true},
      {"q_lora_rank", "--q-lora-rank", Kind::Int, true},
      {"kv_lora_rank", "--kv-lora-rank", Kind::Int, true},
      {"qk_head_dim", "--qk-head-dim", Kind::Int, true},
      {"qk_pos_emb_head_dim", "--qk-pos-emb-head-dim", Kind::Int, true},
      {"v_head_dim", "--v-head-dim", Kind::Int, true},
      {"rope_type", "--rope-type", Kind::String, true},
      {"rotary_scaling_factor", "--rotary-scaling-factor", Kind::Float, true},
      {"mscale", "--mscale", Kind::Float, true},
      {"mscale_all_dim", "--mscale-all-dim", Kind::Float, true},
      {"original_max_position_embeddings", "--original-max-position-embeddings", Kind::Int, true},
      {"layernorm_epsilon", "--norm-epsilon", Kind::Float, false},
      {"hidden_dropout", "--hidden-dropout", Kind::Float, false},
      {"attention_dropout", "--attention-dropout", Kind::Float, false},
      {"num_experts", "--num-experts", Kind::Int, true, true},
      {"moe_ffn_hidden_size", "--moe-ffn-hidden-size", Kind::Int, true, true},
      {"moe_layer_freq", "--moe-layer-freq", Kind::String, true, true, "1"},
      {"moe_shared_expert_intermediate_size", "--moe-shared-expert-intermediate-size", Kind::Int, true, true, "0"},
      {"moe_router_topk", "--moe-router-topk", Kind::Int, false, true},
      {"moe_router_score_function", "--moe-router-score-function", Kind::String, false, true, "softmax"},
      {"moe_router_pre_softmax", "--moe-router-pre-softmax", Kind::Switch, false, true},
      {"moe_router_topk_scaling_factor", "--moe-router-topk-scaling-factor", Kind::Float, false, true, "0"},
      {"moe_aux_loss_coeff", "--moe-aux-loss-coeff", Kind::Float, false, true},
      {"moe_router_num_groups", "--moe-router-num-groups", Kind::Int, false, true, "0"},
      {"moe_router_group_topk", "--moe-router-group-topk", Kind::Int, false, true, "0"},
  };
  return flags;
}

// A recorded number as flag text: floats as the shortest decimal of the float the model holds.
std::string value_text(const nlohmann::json& v, Kind k) {
  if (k == Kind::String) return v.get<std::string>();
  if (k == Kind::Int) return std::to_string(v.get<int64_t>());
  return fmt::format("{}", v.get<float>());
}

// The flags of a command line and their values ("" for a switch or a flag at the end).
std::map<std::string, std::string> given_flags(const std::vector<std::string>& args) {
  std::map<std::string, std::string> given;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) continue;
    const size_t eq = a.find('=');
    std::string flag = a.substr(0, eq), value;
    if (eq != std::string::npos) value = a.substr(eq + 1);
    else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) value = args[i + 1];
    given[flag == "--layernorm-epsilon" ? "--norm-epsilon" : flag] = value;
  }
  return given;
}

// A given flag's value typed as the recorded one (null when it does not parse: CLI11 says so).
nlohmann::json typed_value(const std::string& given, Kind k) {
  try {
    if (k == Kind::String) return given;
    if (k == Kind::Int) return std::stoll(given);
    if (k == Kind::Float) return double(std::stof(given));  // the model holds floats
    return true;  // a switch given
  } catch (const std::exception&) {
    return nullptr;
  }
}

// --moe-layer-freq for the config's MoE layers: "1" when every layer is one, else the list.
std::string moe_layer_freq_text(const TransformerConfig& c) {
  std::string list;
  bool all = true;
  for (int l = 0; l < c.num_layers; ++l) {
    all = all && c.is_moe_layer(l);
    list += std::string(l ? "," : "[") + (c.is_moe_layer(l) ? "1" : "0");
  }
  return all ? "1" : list + "]";
}

}  // namespace

nlohmann::json checkpoint_args_for(const TransformerConfig& c, int tp) {
  TrainingArgs a;
  a.num_layers = c.num_layers;
  a.hidden_size = c.hidden_size;
  a.ffn_hidden_size = c.ffn_hidden_size;
  a.num_attention_heads = c.num_attention_heads;
  a.seq_length = c.seq_length;
  a.max_position_embeddings = c.max_position_embeddings;
  a.vocab_size = c.vocab_size;
  a.init_method_std = c.init_method_std;
  a.hidden_dropout = c.hidden_dropout;
  a.attention_dropout = c.attention_dropout;
  a.layernorm_epsilon = c.layernorm_epsilon;
  a.normalization = normalization_name(c.normalization);
  a.swiglu = c.gated_linear_unit;
  a.group_query_attention = c.query_groups() != c.num_attention_heads;
  a.num_query_groups = a.group_query_attention ? c.query_groups() : 1;
  a.kv_channels = c.kv_channels;
  a.position_embedding_type = position_embedding_name(c.position_embedding_type);
  a.rotary_base = c.rotary_base;
  a.rotary_percent = c.rotary_percent;
  a.use_rope_scaling = c.rope_scaling;
  a.rope_scaling_factor = c.rope_scaling_factor;
  a.untie_embeddings_and_output_weights = c.untie_embeddings_and_output_weights;
  a.disable_bias_linear = !c.add_bias_linear;
  a.add_qkv_bias = c.add_qkv_bias;
  a.qk_layernorm = c.qk_layernorm;
  a.multi_latent_attention = c.multi_latent_attention;
  a.q_lora_rank = c.q_lora_rank;
  a.kv_lora_rank = c.kv_lora_rank;
  a.qk_head_dim = c.qk_head_dim;
  a.qk_pos_emb_head_dim = c.qk_pos_emb_head_dim;
  a.v_head_dim = c.v_head_dim;
  a.rope_type = c.rope_type == RopeType::Yarn ? "yarn" : c.multi_latent_attention ? "rope" : "";
  a.rotary_scaling_factor = c.rotary_scaling_factor;
  a.mscale = c.mscale;
  a.mscale_all_dim = c.mscale_all_dim;
  a.original_max_position_embeddings = c.original_max_position_embeddings;
  a.bf16 = c.params_dtype == DType::BF16;
  a.fp16 = c.params_dtype == DType::F16;
  a.tensor_model_parallel_size = tp;
  if (c.is_moe()) {
    a.num_experts = c.num_moe_experts;
    a.moe_ffn_hidden_size = c.moe_ffn_size();
    a.moe_router_topk = c.moe_router_topk;
    a.moe_router_score_function = c.moe_router_score_function == MoeScoreFunction::Sigmoid ? "sigmoid" : "softmax";
    a.moe_router_pre_softmax = c.moe_router_pre_softmax;
    // The floats as their shortest decimals (0.001, not 0.0010000000474974513).
    a.moe_router_topk_scaling_factor = std::stod(fmt::format("{}", c.moe_router_topk_scaling_factor));
    a.moe_aux_loss_coeff = std::stod(fmt::format("{}", c.moe_aux_loss_coeff));
    a.moe_shared_expert_intermediate_size = c.moe_shared_expert_intermediate_size;
    a.moe_layer_freq = moe_layer_freq_text(c);
    a.moe_router_num_groups = c.moe_router_num_groups;
    a.moe_router_group_topk = c.moe_router_group_topk;
  }
  return args_to_json(a, c);
}

TransformerConfig config_from_checkpoint_args(const nlohmann::json& j, const std::string& where) {
  auto get = [&](const char* key) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(key))
      MT_USER_ERROR("{}: the checkpoint's arguments lack \"{}\" (saved before megatron.cpp recorded the architecture?)",
                    where, key);
    return j[key];
  };
  TransformerConfig c;
  try {
    c.num_layers = get("num_layers").get<int>();
    c.hidden_size = get("hidden_size").get<int>();
    c.ffn_hidden_size = get("ffn_hidden_size").get<int>();
    c.num_attention_heads = get("num_attention_heads").get<int>();
    c.num_query_groups = get("num_query_groups").get<int>();
    c.kv_channels = get("kv_channels").get<int>();
    c.seq_length = get("seq_length").get<int>();
    c.max_position_embeddings = get("max_position_embeddings").get<int>();
    c.vocab_size = c.padded_vocab_size = get("vocab_size").get<int64_t>();
    c.init_method_std = get("init_method_std").get<float>();
    c.hidden_dropout = get("hidden_dropout").get<float>();
    c.attention_dropout = get("attention_dropout").get<float>();
    c.layernorm_epsilon = get("layernorm_epsilon").get<float>();
    const std::string norm = get("normalization").get<std::string>();
    if (norm != "LayerNorm" && norm != "RMSNorm") MT_USER_ERROR("{}: normalization \"{}\"?", where, norm);
    c.normalization = norm == "RMSNorm" ? Normalization::RMSNorm : Normalization::LayerNorm;
    c.gated_linear_unit = get("swiglu").get<bool>();
    c.activation = c.gated_linear_unit ? Activation::Silu : Activation::Gelu;
    const std::string pos = get("position_embedding_type").get<std::string>();
    c.position_embedding_type = pos == "rope"   ? PositionEmbedding::Rope
                                : pos == "none" ? PositionEmbedding::None
                                                : PositionEmbedding::LearnedAbsolute;
    c.rotary_base = get("rotary_base").get<float>();
    c.rotary_percent = get("rotary_percent").get<float>();
    c.rope_scaling = get("use_rope_scaling").get<bool>();
    c.rope_scaling_factor = get("rope_scaling_factor").get<float>();
    c.add_bias_linear = !get("disable_bias_linear").get<bool>();
    c.add_qkv_bias = get("add_qkv_bias").get<bool>();
    c.qk_layernorm = get("qk_layernorm").get<bool>();
    c.untie_embeddings_and_output_weights = get("untie_embeddings_and_output_weights").get<bool>();
    // Multi-latent attention and YaRN (recorded only where used).
    c.multi_latent_attention = j.value("multi_latent_attention", false);
    c.q_lora_rank = j.value("q_lora_rank", c.q_lora_rank);
    c.kv_lora_rank = j.value("kv_lora_rank", c.kv_lora_rank);
    c.qk_head_dim = j.value("qk_head_dim", c.qk_head_dim);
    c.qk_pos_emb_head_dim = j.value("qk_pos_emb_head_dim", c.qk_pos_emb_head_dim);
    c.v_head_dim = j.value("v_head_dim", c.v_head_dim);
    c.rope_type = j.value("rope_type", std::string("rope")) == "yarn" ? RopeType::Yarn : RopeType::Rope;
    c.rotary_scaling_factor = j.value("rotary_scaling_factor", c.rotary_scaling_factor);
    c.mscale = j.value("mscale", c.mscale);
    c.mscale_all_dim = j.value("mscale_all_dim", c.mscale_all_dim);
    c.original_max_position_embeddings = j.value("original_max_position_embeddings", c.original_max_position_embeddings);
    read_recorded_moe_args(j, c);  // the experts (none before MoE; defaults for settings not recorded)
  } catch (const nlohmann::json::exception& e) {
    MT_USER_ERROR("{}: the checkpoint's arguments are malformed ({})", where, e.what());
  }
  return c;
}

std::vector<std::pair<std::string, std::string>> checkpoint_architecture_flags(const nlohmann::json& args) {
  std::vector<std::pair<std::string, std::string>> out;
  const bool moe =
      args.contains("num_experts") && args["num_experts"].is_number() && args["num_experts"].get<int>() > 0;
  for (const ArchFlag& f : arch_flags()) {
    if (!args.contains(f.key) || (f.moe && !moe)) continue;
    const nlohmann::json& v = args[f.key];
    if (f.kind == Kind::Switch) {
      if (v.get<bool>()) out.emplace_back(f.flag, "");
    } else if (!f.implied || value_text(v, f.kind) != f.implied) {
      out.emplace_back(f.flag, value_text(v, f.kind));
    }
  }
  if (args.contains("num_query_groups") && args.contains("num_attention_heads") &&
      args["num_query_groups"] != args["num_attention_heads"]) {
    out.emplace_back("--group-query-attention", "");
    out.emplace_back("--num-query-groups", std::to_string(args["num_query_groups"].get<int>()));
  }
  return out;
}

std::vector<std::string> expand_checkpoint_architecture(const std::vector<std::string>& args, std::string* expanded) {
  if (args.empty() || args[0] != "train") return args;
  std::string dir;
  size_t load_end = 0;  // where the flags go: after --load DIR
  std::string step_text;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--load" && i + 1 < args.size()) dir = args[i + 1], load_end = i + 2;
    else if (args[i].rfind("--load=", 0) == 0) dir = args[i].substr(7), load_end = i + 1;
    else if (args[i] == "--ckpt-step" && i + 1 < args.size()) step_text = args[i + 1];
    else if (args[i].rfind("--ckpt-step=", 0) == 0) step_text = args[i].substr(12);
  }
  if (dir.empty()) return args;
  nlohmann::json common;
  std::string path;
  if (is_megatron_lm_checkpoint(dir)) {  // Megatron-LM's: its saved args, as ours (weights only)
    const MegatronLmCheckpoint mlm(dir);
    common = {{"args", checkpoint_args_for(mlm.config(), 1)}};
    path = mlm.path();
  } else {
    int64_t step = -1;
    if (!step_text.empty()) {
      auto r = std::from_chars(step_text.data(), step_text.data() + step_text.size(), step);
      if (r.ec != std::errc() || r.ptr != step_text.data() + step_text.size()) return args;  // CLI11 says so
    }
    CheckpointLocation where;
    // No checkpoint there: the trainer decides (an error, or a warning and training from scratch).
    if (!locate_checkpoint(dir, step, where, nullptr)) return args;
    const CheckpointReader reader(where.dir, where.iteration, nullptr);
    common = reader.common();
    path = reader.path();
  }
  if (!common.is_object() || !common.contains("args") || !common["args"].is_object()) return args;
  const nlohmann::json& saved = common["args"];

  // Shape flags given explicitly must agree with the checkpoint: the trainer's check, made before
  // the flags are parsed (and with its wording).
  const std::map<std::string, std::string> given = given_flags(args);
  nlohmann::json now = nlohmann::json::object();
  std::vector<std::string> keys;
  auto note = [&](const char* key, const char* flag, Kind kind) {
    auto it = given.find(flag);
    if (it == given.end()) return;
    nlohmann::json v = typed_value(it->second, kind);
    if (v.is_null()) return;
    if (kind == Kind::Float && saved.contains(key) && saved[key].is_number())
      v = double(float(saved[key].get<double>())) == v.get<double>() ? saved[key] : v;
    now[key] = v;
    keys.push_back(key);
  };
  for (const ArchFlag& f : arch_flags())
    if (f.shape) note(f.key, f.flag, f.kind);
  note("num_query_groups", "--num-query-groups", Kind::Int);
  check_args_match(saved, now, keys, path);
  // A longer --seq-length than the checkpoint's learned position table: say where the table's
  // size comes from (the validation would otherwise blame a --max-position-embeddings never given).
  if (given.count("--seq-length") && !given.count("--max-position-embeddings") &&
      saved.value("position_embedding_type", std::string()) == "learned_absolute" &&
      saved.contains("max_position_embeddings") && saved["max_position_embeddings"].is_number_integer()) {
    const nlohmann::json seq = typed_value(given.at("--seq-length"), Kind::Int);
    const int64_t table = saved["max_position_embeddings"].get<int64_t>();
    if (seq.is_number_integer() && seq.get<int64_t>() > table)
      MT_USER_ERROR("--seq-length {}: the checkpoint in {} has learned position embeddings for {} positions "
                    "(--max-position-embeddings {}); train at --seq-length {} or less", seq.get<int64_t>(), path,
                    table, table, table);
  }

  std::vector<std::pair<std::string, std::string>> add;
  for (const auto& [flag, value] : checkpoint_architecture_flags(saved))
    if (!given.count(flag)) add.emplace_back(flag, value);
  if (!common.contains("optimizer") && !given.count("--finetune") && !given.count("--no-load-optim"))
    add.emplace_back("--no-load-optim", "");
  std::vector<std::string> out(args.begin(), args.begin() + std::ptrdiff_t(load_end));
  for (const auto& [flag, value] : add) {
    out.push_back(flag);
    if (!value.empty()) out.push_back(value);
    if (expanded) *expanded += (expanded->empty() ? "" : " ") + flag + (value.empty() ? "" : " " + value);
  }
  out.insert(out.end(), args.begin() + std::ptrdiff_t(load_end), args.end());
  return out;
}

std::vector<std::string> expand_hf_architecture(const std::vector<std::string>& args, std::string* expanded) {
  if (args.empty() || args[0] != "train") return args;
  std::string dir;
  size_t load_end = 0;  // the flags go after --load-hf DIR
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--load-hf" && i + 1 < args.size()) dir = args[i + 1], load_end = i + 2;
    else if (args[i].rfind("--load-hf=", 0) == 0) dir = args[i].substr(10), load_end = i + 1;
  }
  if (dir.empty()) return args;
  const nlohmann::json saved = checkpoint_args_for(read_hf_config(dir, DType::F32, 1), 1);
  const std::map<std::string, std::string> given = given_flags(args);
  std::vector<std::string> out(args.begin(), args.begin() + std::ptrdiff_t(load_end));
  for (const auto& [flag, value] : checkpoint_architecture_flags(saved)) {
    if (given.count(flag) || flag == "--seq-length") continue;
    out.push_back(flag);
    if (!value.empty()) out.push_back(value);
    if (expanded) *expanded += (expanded->empty() ? "" : " ") + flag + (value.empty() ? "" : " " + value);
  }
  out.insert(out.end(), args.begin() + std::ptrdiff_t(load_end), args.end());
  return out;
}

}  // namespace mt
