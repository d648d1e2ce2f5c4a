#include "train/checkpointing.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "checkpoint/megatron_lm_convert.h"
#include "core/error.h"
#include "train/checkpoint_architecture.h"
#include "comm/process_groups.h"
#include "model/param_buffer.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"

namespace mt {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "18.21 GB", "444.7 kB" (decimal units, as disks are rated); rates "3.05 GB/s", "12.4 MB/s".
std::string human(double v, const char* suffix) {
  if (v >= 1e9) return fmt::format("{:.2f} G{}", v / 1e9, suffix);
  if (v >= 1e6) return fmt::format("{:.1f} M{}", v / 1e6, suffix);
  return fmt::format("{:.1f} k{}", v / 1e3, suffix);
}
std::string gb(uint64_t bytes) { return human(double(bytes), "B"); }
std::string gb_per_s(uint64_t bytes, double s) { return human(s > 0 ? double(bytes) / s : 0.0, "B/s"); }

// Parameters whose rows are the (padded) vocabulary: Megatron-Core's names.
bool vocab_padded(const ParamInfo& p, const TransformerConfig& cfg) {
  return (p.name == "embedding.word_embeddings.weight" || p.name == "output_layer.weight") &&
         p.global_shape.size() == 2 && p.global_shape[0] == cfg.padded_vocab_size &&
         cfg.vocab_size <= cfg.padded_vocab_size;
}

}  // namespace

nlohmann::json args_to_json(const TrainingArgs& a, const TransformerConfig& cfg) {
  nlohmann::json j;
#define MT_ARG(x) j[#x] = a.x
  MT_ARG(num_layers); MT_ARG(hidden_size); MT_ARG(num_attention_heads); MT_ARG(seq_length);
  MT_ARG(make_vocab_size_divisible_by); MT_ARG(init_method_std); MT_ARG(hidden_dropout);
  MT_ARG(attention_dropout); MT_ARG(layernorm_epsilon); MT_ARG(micro_batch_size); MT_ARG(global_batch_size);
  MT_ARG(train_iters); MT_ARG(lr); MT_ARG(min_lr); MT_ARG(lr_decay_style); MT_ARG(lr_decay_iters);
  MT_ARG(lr_warmup_iters); MT_ARG(lr_warmup_fraction); MT_ARG(weight_decay); MT_ARG(clip_grad);
  MT_ARG(adam_beta1); MT_ARG(adam_beta2); MT_ARG(adam_eps); MT_ARG(seed); MT_ARG(bf16); MT_ARG(fp16);
  MT_ARG(loss_scale); MT_ARG(initial_loss_scale); MT_ARG(min_loss_scale); MT_ARG(loss_scale_window);
  MT_ARG(hysteresis); MT_ARG(data_path); MT_ARG(train_data_path); MT_ARG(valid_data_path); MT_ARG(test_data_path);
  MT_ARG(split); MT_ARG(mock_data); MT_ARG(eod_mask_loss); MT_ARG(tokenizer_type); MT_ARG(vocab_file);
  MT_ARG(merge_file); MT_ARG(tokenizer_model); MT_ARG(tensor_model_parallel_size);
  MT_ARG(pipeline_model_parallel_size); MT_ARG(context_parallel_size); MT_ARG(expert_model_parallel_size);
  MT_ARG(sequence_parallel); MT_ARG(use_distributed_optimizer); MT_ARG(save_interval);
  MT_ARG(num_experts); MT_ARG(moe_router_topk); MT_ARG(moe_layer_freq); MT_ARG(moe_shared_expert_intermediate_size);
  MT_ARG(moe_router_enable_expert_bias); MT_ARG(moe_router_score_function); MT_ARG(moe_router_pre_softmax);
  MT_ARG(moe_router_topk_scaling_factor); MT_ARG(moe_aux_loss_coeff); MT_ARG(moe_router_num_groups);
  MT_ARG(moe_router_group_topk);
#undef MT_ARG
  // The architecture as the model was built (a checkpoint of one family never loads into another).
  j["normalization"] = normalization_name(cfg.normalization);
  j["swiglu"] = cfg.gated_linear_unit;
  j["num_query_groups"] = cfg.query_groups();
  j["kv_channels"] = cfg.head_dim();
  j["position_embedding_type"] = position_embedding_name(cfg.position_embedding_type);
  j["rotary_base"] = cfg.rotary_base;
  j["rotary_percent"] = cfg.rotary_percent;
  j["use_rope_scaling"] = cfg.rope_scaling;
  j["rope_scaling_factor"] = cfg.rope_scaling_factor;
  j["disable_bias_linear"] = !cfg.add_bias_linear;
  j["add_qkv_bias"] = cfg.add_qkv_bias;
  j["qk_layernorm"] = cfg.qk_layernorm;
  j["untie_embeddings_and_output_weights"] = cfg.untie_embeddings_and_output_weights;
  // What the run resolved (0 in the flags means "derive it").
  j["ffn_hidden_size"] = cfg.ffn_hidden_size;
  j["max_position_embeddings"] = cfg.max_position_embeddings;
  j["vocab_size"] = cfg.vocab_size;
  j["padded_vocab_size"] = cfg.padded_vocab_size;
  if (cfg.is_moe()) j["moe_ffn_hidden_size"] = cfg.moe_ffn_size();
  // Multi-latent attention and YaRN: recorded only where used (other checkpoints keep their args).
  if (cfg.multi_latent_attention) {
    j["multi_latent_attention"] = true;
    j["q_lora_rank"] = cfg.q_lora_rank;
    j["kv_lora_rank"] = cfg.kv_lora_rank;
    j["qk_head_dim"] = cfg.qk_head_dim;
    j["qk_pos_emb_head_dim"] = cfg.qk_pos_emb_head_dim;
    j["v_head_dim"] = cfg.v_head_dim;
  }
  if (cfg.multi_latent_attention || cfg.rope_type == RopeType::Yarn)
    j["rope_type"] = cfg.rope_type == RopeType::Yarn ? "yarn" : "rope";
  if (cfg.rope_type == RopeType::Yarn) {
    j["rotary_scaling_factor"] = cfg.rotary_scaling_factor;
    j["mscale"] = cfg.mscale;
    j["mscale_all_dim"] = cfg.mscale_all_dim;
    j["original_max_position_embeddings"] = cfg.original_max_position_embeddings;
  }
  return j;
}

TrainCheckpointer::TrainCheckpointer(const TrainingArgs& args, const TransformerConfig& cfg, ProcessGroups& groups,
                                     std::vector<CheckpointPart> parts,
                                     std::vector<std::pair<std::string, Tensor>> persistent, GradScaler& scaler,
                                     std::FILE* log0)
    : args_(args), cfg_(cfg), groups_(groups), persistent_(std::move(persistent)), scaler_(scaler), log0_(log0) {
  for (const CheckpointPart& cp : parts) {
    Part part;
    static_cast<CheckpointPart&>(part) = cp;
    for (const ParamInfo& p : cp.buf->infos())
      part.layout.push_back(FlatTensorLayout{p.name, p.shape, p.offset, p.global_shape, p.shard_dim, p.shard_start,
                                             vocab_padded(p, cfg) ? cfg.vocab_size : -1, p.pipeline_duplicate});
    parts_.push_back(std::move(part));
  }
  if (args.async_save && !args.save.empty()) {
    async_ = std::make_unique<AsyncCheckpointSaver>();
    std::vector<ShardedTensor> pieces = model_pieces("");
    for (auto& t : optimizer_pieces()) pieces.push_back(std::move(t));
    async_->prepare(pieces);  // pins the snapshot buffer while training starts
  }
}

TrainCheckpointer::~TrainCheckpointer() = default;

std::vector<ShardedTensor> TrainCheckpointer::model_pieces(const std::string& prefix) const {
  const RankCoords c = groups_.coords();
  std::vector<ShardedTensor> out;
  for (const Part& p : parts_)
    for (auto& t : shard_flat_buffer(p.layout, prefix, p.buf->params(), 0, p.dp_rank, c.tp)) out.push_back(std::move(t));
  for (const auto& [name, t] : persistent_) {  // under their own names (no master copy)
    ShardedTensor s = ShardedTensor::whole(name, t);
    s.replica_id = c.dp != 0 || c.cp != 0 || c.tp != 0 ? 1 : 0;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<ShardedTensor> TrainCheckpointer::optimizer_pieces() const {
  const int tp_rank = groups_.coords().tp;
  std::vector<ShardedTensor> out;
  auto add = [&](std::vector<ShardedTensor> v) {
    for (auto& t : v) out.push_back(std::move(t));
  };
  for (const Part& p : parts_)
    for (const OptimizerStateRange& r : p.opt->state_ranges()) {
      add(shard_flat_buffer(p.layout, "optimizer.exp_avg.", r.exp_avg, r.offset, r.dp_replica, tp_rank));
      add(shard_flat_buffer(p.layout, "optimizer.exp_avg_sq.", r.exp_avg_sq, r.offset, r.dp_replica, tp_rank));
      if (r.master.defined())
        add(shard_flat_buffer(p.layout, "optimizer.master.", r.master, r.offset, r.dp_replica, tp_rank));
    }
  return out;
}

void TrainCheckpointer::save(const TrainProgress& p) {
  std::vector<ShardedTensor> pieces = model_pieces("");
  for (auto& t : optimizer_pieces()) pieces.push_back(std::move(t));
  nlohmann::json common;
  common["iteration"] = p.iteration;
  common["consumed_train_samples"] = p.consumed_train_samples;
  common["consumed_valid_samples"] = p.consumed_valid_samples;
  common["optimizer"] = {{"step", parts_.front().opt->steps_taken()}};
  common["grad_scaler"] = {{"scale", scaler_.scale()},
                           {"growth_tracker", scaler_.growth_tracker()},
                           {"hysteresis_tracker", scaler_.hysteresis_tracker()}};
  common["rng"] = {{"seed", p.seed}};
  common["args"] = args_to_json(args_, cfg_);
  SaveOptions opt;
  opt.rank = groups_.rank();
  opt.world_size = groups_.world_size();
  Communicator& world = groups_.world();
  opt.barrier = [&world] { world.barrier(); };
  opt.layout.tp = args_.tensor_model_parallel_size;
  opt.layout.pp = args_.pipeline_model_parallel_size;
  opt.layout.cp = args_.context_parallel_size;
  opt.layout.ep = args_.expert_model_parallel_size;
  opt.layout.dp = groups_.dp().size();
  opt.layout.distributed_optimizer = args_.use_distributed_optimizer;
  opt.keep_last = args_.ckpt_keep_last;
  const auto t0 = std::chrono::steady_clock::now();
  if (async_) {
    const bool previous = async_->in_flight();
    finalize();  // the previous save, logged: only one is in flight at a time
    const double waited_previous = seconds_since(t0);
    const auto t1 = std::chrono::steady_clock::now();
    async_->start(args_.save, p.iteration, pieces, common, opt);
    async_dir_ = args_.save;
    if (log0_)
      fmt::print(log0_, "> saving checkpoint at iteration {} to {} (async: training waited {:.3f} s for the snapshot{})\n",
                 p.iteration, args_.save, seconds_since(t1),
                 previous ? fmt::format(", {:.3f} s for the previous save to finish", waited_previous) : "");
  } else {
    const SaveStats st = save_checkpoint(args_.save, p.iteration, pieces, common, opt);
    const double s = seconds_since(t0);
    if (log0_)
      fmt::print(log0_, "> saved checkpoint at iteration {} to {} in {:.3f} s ({}, {})\n", p.iteration, args_.save, s,
                 gb(st.bytes), gb_per_s(st.bytes, s));
  }
  if (log0_) std::fflush(log0_);
  last_saved_ = p.iteration;
}

void TrainCheckpointer::finalize() {
  if (!async_ || !async_->in_flight()) return;
  SaveStats st;
  const int64_t it = async_->finalize(&st);
  if (log0_ && it >= 0) {
    fmt::print(log0_, "> saved checkpoint at iteration {} to {} in {:.3f} s ({}, {}; async, complete)\n", it,
               async_dir_, st.write_seconds, gb(st.bytes), gb_per_s(st.bytes, st.write_seconds));
    std::fflush(log0_);
  }
}

void TrainCheckpointer::maybe_finalize() {
  if (!async_ || !async_->in_flight()) return;
  const bool done = async_->writer_done();
  Communicator& world = groups_.world();
  if (world.size() > 1 ? world.all_reduce_scalar(done ? 0.0 : 1.0, ReduceOp::Max) == 0 : done) finalize();
}

void validate_common_json(const nlohmann::json& common, const std::string& path) {
  const std::string where = path + "/common.json";
  if (!common.is_object()) MT_USER_ERROR("{}: not a JSON object", where);
  auto field = [](const nlohmann::json& obj, const char* key) -> const nlohmann::json* {
    return obj.is_object() && obj.contains(key) ? &obj[key] : nullptr;
  };
  auto count = [&](const nlohmann::json& obj, const char* key, const std::string& name) {
    if (const nlohmann::json* v = field(obj, key))
      if (!v->is_number_integer() || v->get<int64_t>() < 0)
        MT_USER_ERROR("{}: \"{}\" must be an integer >= 0, found {}", where, name, v->dump().substr(0, 40));
  };
  auto number = [&](const nlohmann::json& obj, const char* key, const std::string& name) {
    if (const nlohmann::json* v = field(obj, key))
      if (!v->is_number() || !std::isfinite(v->get<double>()))
        MT_USER_ERROR("{}: \"{}\" must be a finite number, found {}", where, name, v->dump().substr(0, 40));
  };
  auto object = [&](const char* key) -> const nlohmann::json* {
    const nlohmann::json* v = field(common, key);
    if (v && !v->is_object()) MT_USER_ERROR("{}: \"{}\" must be an object, found {}", where, key, v->dump().substr(0, 40));
    return v;
  };
  count(common, "iteration", "iteration");
  count(common, "consumed_train_samples", "consumed_train_samples");
  count(common, "consumed_valid_samples", "consumed_valid_samples");
  if (const nlohmann::json* rng = object("rng")) count(*rng, "seed", "rng.seed");
  if (const nlohmann::json* o = object("optimizer")) count(*o, "step", "optimizer.step");
  if (const nlohmann::json* s = object("grad_scaler")) {
    number(*s, "scale", "grad_scaler.scale");
    count(*s, "growth_tracker", "grad_scaler.growth_tracker");
    count(*s, "hysteresis_tracker", "grad_scaler.hysteresis_tracker");
  }
  if (const nlohmann::json* args = object("args"))
    if (args->contains("num_layers")) (void)config_from_checkpoint_args(*args, where);
}

bool resolve_load(const TrainingArgs& a, CheckpointLocation& where, std::FILE* warn) {
  if (a.load.empty()) {
    if (a.ckpt_step >= 0) MT_USER_ERROR("--ckpt-step {}: needs --load (the directory to load it from)", a.ckpt_step);
    return false;
  }
  if (is_megatron_lm_checkpoint(a.load)) {
    if (a.ckpt_step >= 0)
      MT_USER_ERROR("--ckpt-step {}: --load {} is a Megatron-LM checkpoint; give its iter_* directory instead",
                    a.ckpt_step, a.load);
    where = CheckpointLocation{a.load, -1};
    return true;
  }
  if (locate_checkpoint(a.load, a.ckpt_step, where, warn)) return true;
  const bool save_has = !a.save.empty() && holds_checkpoints(a.save);
  if (save_has && !a.allow_start_from_scratch && !a.finetune)
    MT_USER_ERROR("--load {}: no checkpoint there, and --save {} holds checkpoints that training from scratch would "
                  "overwrite; check the path, or pass --allow-start-from-scratch", a.load, a.save);
  if (warn) fmt::print(warn, "WARNING: could not find a checkpoint in {}: training from scratch\n", a.load);
  return false;
}

std::unique_ptr<DirectoryLock> prepare_save_directory(const TrainingArgs& a, bool world_rank0, std::FILE* log0) {
  if (a.save.empty() || !world_rank0) return nullptr;
  auto lock = std::make_unique<DirectoryLock>(a.save, "--save");
  const int removed = remove_stale_temporaries(a.save);
  if (removed > 0 && log0)
    fmt::print(log0, "> removed {} temporary file(s) that an interrupted save left in {}\n", removed, a.save);
  return lock;
}

TrainProgress TrainCheckpointer::load(const TrainProgress& fresh) {
  CheckpointLocation where;
  if (!resolve_load(args_, where, log0_ ? stderr : nullptr)) return fresh;
  const auto t0 = std::chrono::steady_clock::now();
  if (is_megatron_lm_checkpoint(args_.load)) {
    // Megatron-LM's (torch_dist or torch, any layout): its weights, converted on the fly; its
    // optimizer state is not read, so training starts as from a converted checkpoint (iteration 0).
    const MegatronLmCheckpoint mlm(args_.load);
    mlm.check();
    uint64_t bytes = 0;
    for (const Part& p : parts_) {
      bytes += load_megatron_lm_weights_into(mlm, *p.buf);
      p.opt->reset_master_from_params();
    }
    if (log0_)
      fmt::print(log0_,
                 "> loaded Megatron-LM {} checkpoint {} (iteration {}, TP {} x PP {}): weights only, {} in {:.3f} s\n",
                 mlm.format(), mlm.path(), mlm.iteration(), mlm.tp(), mlm.pp(), gb(bytes),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return fresh;
  }
  CheckpointReader ck(where.dir, where.iteration, log0_ ? stderr : nullptr);
  const int64_t it = ck.iteration();
  const nlohmann::json& common = ck.common();
  // common.json is checksummed, but a hand-edited one (checksum updated) may hold any JSON.
  auto malformed = [&](const std::exception& e) {
    MT_USER_ERROR("{}/common.json: malformed ({})", ck.path(), e.what());
  };
  validate_common_json(common, ck.path());
  try {
    if (common.contains("args"))
      check_args_match(common["args"], args_to_json(args_, cfg_),
                       {"num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size",
                        "max_position_embeddings", "normalization", "swiglu", "num_query_groups", "kv_channels",
                        "position_embedding_type", "rotary_base", "rotary_percent", "use_rope_scaling",
                        "rope_scaling_factor", "disable_bias_linear", "add_qkv_bias", "qk_layernorm",
                        "untie_embeddings_and_output_weights", "num_experts", "moe_ffn_hidden_size",
                        "moe_layer_freq", "moe_shared_expert_intermediate_size", "moe_router_enable_expert_bias",
                        "multi_latent_attention", "q_lora_rank", "kv_lora_rank", "qk_head_dim", "qk_pos_emb_head_dim",
                        "v_head_dim", "rope_type", "rotary_scaling_factor", "mscale", "mscale_all_dim",
                        "original_max_position_embeddings"},
                       ck.path());
  } catch (const nlohmann::json::exception& e) {
    malformed(e);
  }
  const bool load_optim = !args_.finetune && !args_.no_load_optim;
  // An fp32 model takes the fp32 master weights when the checkpoint has them (a bf16 run's).
  const ParamAndGradBuffer& buf = *parts_.front().buf;
  MegatronOptimizer& opt = *parts_.front().opt;
  const bool from_master = !opt.has_master_copy() && !buf.infos().empty() &&
                           ck.contains("optimizer.master." + buf.infos().front().name);
  std::vector<ShardedTensor> requests = model_pieces(from_master ? "optimizer.master." : "");
  bool master_loaded = false;
  if (load_optim) {
    master_loaded = opt.has_master_copy() && !buf.infos().empty() &&
                    ck.contains("optimizer.master." + buf.infos().front().name);
    for (auto& t : optimizer_pieces()) {
      if (!master_loaded && t.name.rfind("optimizer.master.", 0) == 0) continue;
      requests.push_back(std::move(t));
    }
  }
  const uint64_t bytes_read = ck.load(requests);
  // The vocabulary padding rows the checkpoint does not hold: zero, as init leaves them.
  for (const Part& p : parts_) {
    zero_unstored_rows(p.layout, p.buf->params(), 0);
    for (const OptimizerStateRange& r : p.opt->state_ranges()) {
      zero_unstored_rows(p.layout, r.exp_avg, r.offset);
      zero_unstored_rows(p.layout, r.exp_avg_sq, r.offset);
      if (r.master.defined()) zero_unstored_rows(p.layout, r.master, r.offset);
    }
    if (!master_loaded) p.opt->reset_master_from_params();
  }

  TrainProgress p = fresh;
  try {
    if (!args_.finetune) {
      p.iteration = common.value("iteration", int64_t(0));
      p.consumed_train_samples = common.value("consumed_train_samples", int64_t(0));
      p.consumed_valid_samples = common.value("consumed_valid_samples", int64_t(0));
      if (!args_.no_load_rng && common.contains("rng")) p.seed = common["rng"].value("seed", fresh.seed);
    }
    if (load_optim) {
      if (common.contains("optimizer"))
        for (const Part& p : parts_) p.opt->set_steps_taken(common["optimizer"].value("step", int64_t(0)));
      if (common.contains("grad_scaler")) {
        const auto& s = common["grad_scaler"];
        scaler_.set_state(s.value("scale", scaler_.scale()), s.value("growth_tracker", int64_t(0)),
                          s.value("hysteresis_tracker", scaler_.hysteresis_tracker()));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    malformed(e);
  }
  Communicator& world = groups_.world();
  double seconds = seconds_since(t0), bytes = double(bytes_read);
  if (world.size() > 1) {
    seconds = world.all_reduce_scalar(seconds, ReduceOp::Max);
    bytes = world.all_reduce_scalar(bytes);
  }
  if (log0_) {
    fmt::print(log0_, "> loaded checkpoint {} (iteration {}, saved under tp {} dp {}{}) in {:.3f} s ({} read{}, {}){}\n",
               ck.path(), it, ck.layout().tp, ck.layout().dp,
               ck.layout().distributed_optimizer ? ", distributed optimizer" : "", seconds, gb(uint64_t(bytes)),
               world.size() > 1 ? fmt::format(" by {} ranks", world.size()) : "", gb_per_s(uint64_t(bytes), seconds),
               args_.finetune ? ": weights only (--finetune), starting at iteration 0"
               : !load_optim  ? ": without optimizer state (--no-load-optim)"
                              : "");
    std::fflush(log0_);
  }
  return p;
}

}  // namespace mt
