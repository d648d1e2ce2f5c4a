#include "train/checkpointing.h"

#include <fmt/format.h>

#include "core/error.h"
#include "dist/process_groups.h"
#include "model/param_buffer.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"

namespace mt {
namespace {

volatile std::sig_atomic_t g_exit_signal = 0;

extern "C" void on_exit_signal(int) { g_exit_signal = 1; }

}  // namespace

void install_exit_signal_handler() {
  std::signal(SIGTERM, on_exit_signal);
  std::signal(SIGINT, on_exit_signal);
}

bool exit_signal_received() { return g_exit_signal != 0; }

nlohmann::json args_to_json(const TrainingArgs& a, const GPTConfig& cfg) {
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
#undef MT_ARG
  // What the run resolved (0 in the flags means "derive it").
  j["ffn_hidden_size"] = cfg.ffn_hidden_size;
  j["max_position_embeddings"] = cfg.max_position_embeddings;
  j["vocab_size"] = cfg.vocab_size;
  j["padded_vocab_size"] = cfg.padded_vocab_size;
  return j;
}

TrainCheckpointer::TrainCheckpointer(const TrainingArgs& args, const GPTConfig& cfg, ProcessGroups& groups,
                                     ParamAndGradBuffer& buf, MegatronOptimizer& opt, GradScaler& scaler,
                                     std::FILE* log0)
    : args_(args), cfg_(cfg), groups_(groups), buf_(buf), opt_(opt), scaler_(scaler), log0_(log0) {
  for (const ParamInfo& p : buf.infos())
    layout_.push_back(FlatTensorLayout{p.name, p.shape, p.offset, p.global_shape, p.shard_dim, p.shard_start});
  if (args.async_save) async_ = std::make_unique<AsyncCheckpointSaver>();
}

TrainCheckpointer::~TrainCheckpointer() = default;

std::vector<ShardedTensor> TrainCheckpointer::model_pieces(const std::string& prefix) const {
  const RankCoords c = groups_.coords();
  return shard_flat_buffer(layout_, prefix, buf_.params(), 0, c.dp, c.tp);
}

std::vector<ShardedTensor> TrainCheckpointer::optimizer_pieces() const {
  const int tp_rank = groups_.coords().tp;
  std::vector<ShardedTensor> out;
  auto add = [&](std::vector<ShardedTensor> v) {
    for (auto& t : v) out.push_back(std::move(t));
  };
  for (const OptimizerStateRange& r : opt_.state_ranges()) {
    add(shard_flat_buffer(layout_, "optimizer.exp_avg.", r.exp_avg, r.offset, r.dp_replica, tp_rank));
    add(shard_flat_buffer(layout_, "optimizer.exp_avg_sq.", r.exp_avg_sq, r.offset, r.dp_replica, tp_rank));
    if (r.master.defined())
      add(shard_flat_buffer(layout_, "optimizer.master.", r.master, r.offset, r.dp_replica, tp_rank));
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
  common["optimizer"] = {{"step", opt_.steps_taken()}};
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
  if (async_) {
    async_->start(args_.save, p.iteration, pieces, common, opt);
    if (log0_) fmt::print(log0_, "> saving checkpoint at iteration {} to {} (async)\n", p.iteration, args_.save);
  } else {
    save_checkpoint(args_.save, p.iteration, pieces, common, opt);
    if (log0_) fmt::print(log0_, "> saved checkpoint at iteration {} to {}\n", p.iteration, args_.save);
  }
  if (log0_) std::fflush(log0_);
  last_saved_ = p.iteration;
}

void TrainCheckpointer::finalize() {
  if (!async_ || !async_->in_flight()) return;
  const int64_t it = async_->finalize();
  if (log0_ && it >= 0) {
    fmt::print(log0_, "> checkpoint at iteration {} complete\n", it);
    std::fflush(log0_);
  }
}

TrainProgress TrainCheckpointer::load(const TrainProgress& fresh) {
  if (args_.load.empty()) return fresh;
  const int64_t it = find_latest_checkpoint(args_.load, log0_ ? stderr : nullptr);
  if (it < 0) {
    if (log0_)
      fmt::print(stderr, "WARNING: could not find a checkpoint in {}: training from scratch\n", args_.load);
    return fresh;
  }
  CheckpointReader ck(args_.load, it, log0_ ? stderr : nullptr);
  const nlohmann::json& common = ck.common();
  if (common.contains("args"))
    check_args_match(common["args"], args_to_json(args_, cfg_),
                     {"num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "padded_vocab_size",
                      "max_position_embeddings"},
                     ck.path());
  const bool load_optim = !args_.finetune && !args_.no_load_optim;
  // An fp32 model takes the fp32 master weights when the checkpoint has them (a bf16 run's).
  const bool from_master = !opt_.has_master_copy() && !buf_.infos().empty() &&
                           ck.contains("optimizer.master." + buf_.infos().front().name);
  std::vector<ShardedTensor> requests = model_pieces(from_master ? "optimizer.master." : "");
  bool master_loaded = false;
  if (load_optim) {
    master_loaded = opt_.has_master_copy() && !buf_.infos().empty() &&
                    ck.contains("optimizer.master." + buf_.infos().front().name);
    for (auto& t : optimizer_pieces()) {
      if (!master_loaded && t.name.rfind("optimizer.master.", 0) == 0) continue;
      requests.push_back(std::move(t));
    }
  }
  ck.load(requests);
  if (!master_loaded) opt_.reset_master_from_params();

  TrainProgress p = fresh;
  if (!args_.finetune) {
    p.iteration = common.value("iteration", int64_t(0));
    p.consumed_train_samples = common.value("consumed_train_samples", int64_t(0));
    p.consumed_valid_samples = common.value("consumed_valid_samples", int64_t(0));
    if (!args_.no_load_rng && common.contains("rng")) p.seed = common["rng"].value("seed", fresh.seed);
  }
  if (load_optim) {
    if (common.contains("optimizer")) opt_.set_steps_taken(common["optimizer"].value("step", int64_t(0)));
    if (common.contains("grad_scaler")) {
      const auto& s = common["grad_scaler"];
      scaler_.set_state(s.value("scale", scaler_.scale()), s.value("growth_tracker", int64_t(0)),
                        s.value("hysteresis_tracker", scaler_.hysteresis_tracker()));
    }
  }
  if (log0_) {
    fmt::print(log0_, "> loaded checkpoint {} (iteration {}, saved under tp {} dp {}{}){}\n", ck.path(), it,
               ck.layout().tp, ck.layout().dp, ck.layout().distributed_optimizer ? ", distributed optimizer" : "",
               args_.finetune ? ": weights only (--finetune), starting at iteration 0"
               : !load_optim  ? ": without optimizer state (--no-load-optim)"
                              : "");
    std::fflush(log0_);
  }
  return p;
}

}  // namespace mt
