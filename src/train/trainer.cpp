#include "train/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <memory>

#include "core/allocator.h"
#include "core/cuda/cuda_backend.h"
#include "core/error.h"
#include "comm/comm_timer.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/process_groups.h"
#include "kernels/attention.h"
#include "kernels/cpu_isa.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "model/gpt_model.h"
#include "model/moe_metrics.h"
#include "optim/chained_optimizer.h"
#include "optim/distrib_optimizer.h"
#include "optim/grad_scaler.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "checkpoint/hf_export.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/hf_weights.h"
#include "parallel/distributed_data_parallel.h"
#include "parallel/gather_params.h"
#include "parallel/pipeline_layout.h"
#include "parallel/schedules.h"
#include "train/batch.h"
#include "train/memory_report.h"
#include "train/moe_args.h"
#include "train/recompute_args.h"
#include "train/moe_logging.h"
#include "train/checkpointing.h"
#include "train/data_setup.h"
#include "train/exit_signal.h"
#include "train/flops.h"
#include "train/log_line.h"
#include "train/rerun_state_machine.h"
#include "train/training_metrics.h"
#include "train/sample_schedule.h"
#include "train/straggler.h"
#include "train/training_stats.h"

namespace mt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

TransformerConfig model_config(const TrainingArgs& a, int64_t vocab, int tp) {
  TransformerConfig c;
  c.num_layers = a.num_layers;
  c.hidden_size = a.hidden_size;
  c.ffn_hidden_size = a.ffn_hidden_size > 0 ? a.ffn_hidden_size : default_ffn_hidden_size(a);
  c.num_attention_heads = a.num_attention_heads;
  c.num_query_groups = a.group_query_attention ? a.num_query_groups : 0;
  c.kv_channels = a.kv_channels;
  c.normalization = a.normalization == "RMSNorm" ? Normalization::RMSNorm : Normalization::LayerNorm;
  c.gated_linear_unit = a.swiglu;
  c.activation = a.swiglu ? Activation::Silu : Activation::Gelu;
  c.add_bias_linear = !a.disable_bias_linear;
  c.add_qkv_bias = a.add_qkv_bias;
  c.qk_layernorm = a.qk_layernorm;
  c.position_embedding_type = a.position_embedding_type == "rope"   ? PositionEmbedding::Rope
                              : a.position_embedding_type == "none" ? PositionEmbedding::None
                                                                    : PositionEmbedding::LearnedAbsolute;
  c.rotary_base = float(a.rotary_base);
  c.rotary_percent = float(a.rotary_percent);
  c.rope_scaling = a.use_rope_scaling;
  c.rope_scaling_factor = float(a.rope_scaling_factor);
  c.multi_latent_attention = a.multi_latent_attention;
  c.q_lora_rank = a.q_lora_rank;
  c.kv_lora_rank = a.kv_lora_rank;
  c.qk_head_dim = a.qk_head_dim;
  c.qk_pos_emb_head_dim = a.qk_pos_emb_head_dim;
  c.v_head_dim = a.v_head_dim;
  // Megatron: MLA takes YaRN unless --rope-type rope says otherwise.
  c.rope_type = a.rope_type == "yarn" || (a.rope_type.empty() && a.multi_latent_attention) ? RopeType::Yarn
                                                                                          : RopeType::Rope;
  c.rotary_scaling_factor = float(a.rotary_scaling_factor);
  c.mscale = float(a.mscale);
  c.mscale_all_dim = float(a.mscale_all_dim);
  c.original_max_position_embeddings = a.original_max_position_embeddings;
  c.untie_embeddings_and_output_weights = a.untie_embeddings_and_output_weights;
  c.seq_length = a.seq_length;
  c.max_position_embeddings = a.max_position_embeddings > 0 ? a.max_position_embeddings : a.seq_length;
  c.vocab_size = vocab;
  // Megatron pads to a multiple of make_vocab_size_divisible_by x TP, so every shard is equal.
  c.padded_vocab_size = pad_vocab_size(vocab, a.make_vocab_size_divisible_by * tp);
  c.init_method_std = a.init_method_std;
  c.hidden_dropout = a.hidden_dropout;
  c.attention_dropout = a.attention_dropout;
  c.layernorm_epsilon = a.layernorm_epsilon;
  apply_recompute_args(a, c);
  c.cross_entropy_chunks = a.cross_entropy_chunks;
  c.params_dtype = a.bf16 ? DType::BF16 : a.fp16 ? DType::F16 : DType::F32;
  apply_moe_args(a, c);
  return c;
}

Microbatch microbatch_of(const Batch& b, bool masked) {
  return Microbatch{b.tokens, b.labels, masked ? b.loss_mask : Tensor(), b.positions};
}

// Where this data-parallel rank's microbatch m of a global batch starts (Megatron's
// MegatronPretrainingSampler: each run of micro_batch x DP consecutive samples is cut into DP
// microbatches, rank r taking the r-th).
int64_t microbatch_start(int64_t consumed, int m, int mbs, int dp, int dp_rank) {
  return consumed + (int64_t(m) * dp + dp_rank) * mbs;
}

// Mean loss over eval_iters global batches of the validation source, continuing where the
// previous evaluation stopped (as Megatron's validation iterator does); each data-parallel rank
// evaluates its share and the mean is taken over DP.
double evaluate(const std::vector<const GPTModel*>& chunks, const PipelineSetup& pipeline, const SampleSource& valid,
                const TrainingArgs& a, const BatchLayout& layout, int64_t& consumed, Device dev, Communicator& dp,
                Communicator& cp) {
  double total = 0;
  int64_t n = 0;
  ScheduleConfig sc;
  sc.context_parallel = &cp;
  sc.num_microbatches = a.global_batch_size / (a.micro_batch_size * dp.size());
  sc.forward_only = true;
  for (int64_t it = 0; it < a.eval_iters; ++it) {
    const auto means = forward_backward(
        chunks, nullptr, pipeline,
        [&](int m) {
          return microbatch_of(
              get_batch(valid, microbatch_start(consumed, m, a.micro_batch_size, dp.size(), dp.rank()),
                        a.micro_batch_size, a.seq_length, dev, layout),
              a.eod_mask_loss);
        },
        [&](int) { return ForwardContext{false, a.seed, 0}; }, sc);
    for (double v : means) {
      total += v;
      ++n;
    }
    consumed += a.global_batch_size;
  }
  double mean = n ? total / double(n) : 0.0;
  return dp.size() > 1 ? dp.all_reduce_scalar(mean) / dp.size() : mean;
}

// The memory report's view of this rank (train/memory_report.h).
MemoryLayout memory_layout(const std::vector<const GPTModel*>& chunks, const TrainingArgs& a, ProcessGroups& g,
                           bool host) {
  MemoryLayout l;
  l.tp = g.tp().size();
  l.cp = g.cp().size();
  l.dp = g.dp().size();
  l.ep = g.ep().size();
  l.pp = g.pp().size();
  l.pp_rank = g.coords().pp;
  l.sequence_parallel = a.sequence_parallel;
  l.distributed_optimizer = a.use_distributed_optimizer;
  l.micro_batch_size = a.micro_batch_size;
  l.num_microbatches = a.global_batch_size / (a.micro_batch_size * l.dp);
  for (const GPTModel* ch : chunks) l.chunks.push_back(ch->chunk());
  l.host_blocks = host;
  return l;
}

void report_memory(std::FILE* log, const MemoryEstimate& mine, ProcessGroups& g) {
  std::vector<std::string> names;
  for (int r = 0; r < g.world_size(); ++r) {
    const RankCoords co = g.layout().coords(r);
    names.push_back(fmt::format("rank {} tp {} pp {} dp {}", r, co.tp, co.pp, co.dp));
  }
  print_memory_report(log, mine, g.world(), g.is_first_rank(), names);
}

// Every rank of `group` ends with every rank's final parameters (each rank broadcasts its own in
// turn: the name, the shape, the values).
void share_final_params(Communicator& pp, TrainResult& r) {
  for (int root = 0; root < pp.size(); ++root) {
    const bool mine = pp.rank() == root;
    Tensor count = Tensor::zeros({1}, DType::I64);
    if (mine) count.data<int64_t>()[0] = int64_t(r.final_params.size());
    pp.broadcast(count, root);
    auto it = r.final_params.begin();
    std::vector<std::pair<std::string, std::vector<float>>> received;
    std::vector<Shape> shapes;
    for (int64_t i = 0; i < count.data<int64_t>()[0]; ++i) {
      Tensor meta = Tensor::zeros({10}, DType::I64);  // name length, rank, dims
      if (mine) {
        const Shape& sh = r.final_param_shapes.at(it->first);
        meta.data<int64_t>()[0] = int64_t(it->first.size());
        meta.data<int64_t>()[1] = int64_t(sh.size());
        for (size_t d = 0; d < sh.size(); ++d) meta.data<int64_t>()[2 + d] = sh[d];
      }
      pp.broadcast(meta, root);
      const int64_t* mt = meta.data<int64_t>();
      Tensor name = Tensor::zeros({std::max<int64_t>(mt[0], 1)}, DType::I32);
      Shape shape(mt + 2, mt + 2 + mt[1]);
      Tensor values = Tensor::zeros({std::max<int64_t>(shape_numel(shape), 1)}, DType::F32);
      if (mine) {
        for (size_t c = 0; c < it->first.size(); ++c) name.data<int32_t>()[c] = it->first[c];
        std::copy(it->second.begin(), it->second.end(), values.data<float>());
        ++it;
      }
      pp.broadcast(name, root);
      pp.broadcast(values, root);
      if (mine) continue;
      std::string n;
      for (int64_t c = 0; c < mt[0]; ++c) n += char(name.data<int32_t>()[c]);
      received.emplace_back(n, std::vector<float>(values.data<float>(), values.data<float>() + shape_numel(shape)));
      shapes.push_back(shape);
    }
    for (size_t k = 0; k < received.size(); ++k) {
      r.final_param_shapes[received[k].first] = shapes[k];
      r.final_params[received[k].first] = std::move(received[k].second);
    }
  }
}

// Every parameter at its global shape (vocabulary padding included) on every rank: gathered over
// tensor parallelism, the experts over expert parallelism, then shared over the pipeline stages,
// with `extra` (this stage's persistent buffers) beside them. Tests and --save-hf.
TrainResult gather_model(const ParamAndGradBuffer& buffer, const ParamAndGradBuffer* expert_buffer,
                         ProcessGroups& groups, const std::vector<std::pair<std::string, Tensor>>& extra = {}) {
  auto gather = [&](const ParamAndGradBuffer& b, TrainResult& into) {
    for (int id = 0; id < int(b.infos().size()); ++id) {
      if (b.info(id).pipeline_duplicate) continue;
      Tensor full = gather_full_parameter(b, id, &groups.tp());
      const float* p = full.data<float>();
      into.final_params[b.info(id).name].assign(p, p + full.numel());
      into.final_param_shapes[b.info(id).name] = full.shape();
    }
  };
  TrainResult whole;
  gather(buffer, whole);
  if (expert_buffer) {  // each expert-parallel rank holds E / EP of the experts
    TrainResult experts;
    gather(*expert_buffer, experts);
    if (groups.ep().size() > 1) share_final_params(groups.ep(), experts);
    whole.final_params.merge(experts.final_params);
    whole.final_param_shapes.merge(experts.final_param_shapes);
  }
  for (const auto& [name, t] : extra) {
    whole.final_params[name].assign(t.data<float>(), t.data<float>() + t.numel());
    whole.final_param_shapes[name] = t.shape();
  }
  if (groups.pp().size() > 1) share_final_params(groups.pp(), whole);
  return whole;
}

// --save-hf: the whole model gathered (over tensor parallelism, the experts over expert
// parallelism, then the pipeline stages) and written by rank 0 as a Hugging Face directory, with
// --load-hf's config keys and tokenizer files. Holds the model in fp32 on the first data-parallel
// rank of each stage while it writes.
void save_hf_directory(const TrainingArgs& args, const TransformerConfig& cfg, const ParamAndGradBuffer& buffer,
                       const ParamAndGradBuffer* expert_buffer, ProcessGroups& groups, std::FILE* log0) {
  const TrainResult whole = gather_model(buffer, expert_buffer, groups);
  if (groups.rank() == 0) {
    HfExportOptions opt;
    if (!args.load_hf.empty()) opt.base_config = read_hf_config_json(args.load_hf);
    const HfExportStats st = write_hf_model(args.save_hf, cfg, cfg.params_dtype, [&](const HfTensorMap& m) {
      const auto& v = whole.final_params.at(m.name);
      Tensor t = Tensor::empty({int64_t(v.size())}, DType::F32);
      std::copy(v.begin(), v.end(), t.data<float>());
      return t.flat_slice(0, shape_numel(m.shape), m.shape);  // the real vocabulary rows come first
    }, opt);
    if (!args.load_hf.empty()) copy_hf_assets(args.load_hf, args.save_hf);
    if (log0) fmt::print(log0, "> saved a Hugging Face {} to {} ({} file(s), {:.1f} MB)\n", hf_architecture(st.family),
                         args.save_hf, st.files, double(st.bytes) / 1e6);
  }
  groups.world().barrier();
}

// --device auto: the first GPU when there is one, else the CPU.
Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  const int n = cuda_device_count();
  if (name == "cuda" && n == 0) MT_USER_ERROR("--device cuda: no CUDA device is available (use --device cpu)");
  if (n == 0) return Device::cpu();
  cuda_init_backend();
  return Device::cuda(dist::local_rank() % n);  // one process per GPU
}

}  // namespace

TrainResult pretrain_gpt(const TrainingArgs& args, std::FILE* log, const TrainOptions& opts) {
  const auto t_start = Clock::now();
  // First: a signal during set-up is then acted on after the first iteration, not fatal.
  if (args.exit_signal_handler) install_exit_signal_handler();
  dist::init();
  // Arguments and layout are checked identically on every rank before any communication, so a
  // bad one ends every rank the same way (ArgumentError: printed once, exit code 2).
  try {
    if (!opts.groups) dist::check_launch();  // srun without a PMI: N single-rank trainings otherwise
    validate_args(args);
    validate_parallel_args(args, opts.groups ? opts.groups->world_size() : dist::world_size());
    CheckpointLocation load_from;
    resolve_load(args, load_from, nullptr);  // a mistyped --load fails here, before --save is touched
  } catch (const ArgumentError&) {
    throw;
  } catch (const UserError& e) {
    throw ArgumentError(e.what());
  }
  dist::set_timeout_seconds(args.distributed_timeout_minutes * 60.0);
  Device dev = resolve_device(args.device);
  reset_host_peak_bytes();  // this run's peak, even in a longer process (tests)
  if (args.profile && !dev.is_cuda())
    throw ArgumentError("--profile needs --device cuda (it marks the iterations a GPU profiler captures)");
  std::unique_ptr<ProcessGroups> own_groups;
  if (!opts.groups) {
    std::unique_ptr<Communicator> world = dist::world();
    // Several GPU ranks: device tensors over NCCL, host bookkeeping over MPI.
    if (dev.is_cuda() && world->size() > 1 && dist::nccl_available()) {
      auto nccl = dist::nccl_communicator(*world, "world", dev.index);
      world = dist::hybrid_communicator(std::move(world), std::move(nccl));
    }
    own_groups = std::make_unique<ProcessGroups>(
        std::move(world), ParallelSizes{args.tensor_model_parallel_size, args.context_parallel_size,
                                        args.expert_model_parallel_size, args.pipeline_model_parallel_size});
  }
  ProcessGroups& groups = opts.groups ? *opts.groups : *own_groups;
  Communicator& dp = groups.dp();
  const int dp_size = dp.size(), dp_rank = dp.rank(), tp_size = groups.tp().size();
  // Gradients are reduced (and the distributed optimizer sharded) over the data- and
  // context-parallel ranks together: the context-parallel ranks of a sample hold the same weights.
  Communicator& grad_dp = groups.dp_cp();
  const int cp_size = groups.cp().size();
  // Setup lines from rank 0, iteration lines from the last rank (as Megatron prints them).
  std::FILE* log0 = groups.is_first_rank() ? log : nullptr;
  std::FILE* log_last = groups.is_last_rank() ? log : nullptr;
  const std::unique_ptr<DirectoryLock> save_lock = prepare_save_directory(args, groups.world().rank() == 0, log0);
  TrainingMetrics metrics(args, groups.is_last_rank(), groups.world_size(), dev, log_last);  // TensorBoard, JSONL

  if (args.deterministic_mode) {  // else MT_ATTENTION_DETERMINISTIC, MT_GEMM_AUTOTUNE, MT_ATTENTION_AUTOTUNE or defaults
    set_attention_deterministic(true);
    set_gemm_autotune(false);
    set_attention_autotune(false);
  }
  Datasets data = build_datasets(args);
  int64_t vocab = data.vocab_size;
  if (!args.load_hf.empty()) {
    // The Hugging Face model's vocabulary (its config.json, --vocab-size here) may be larger than
    // the tokenizer's (Qwen pads it): the model keeps its own, the data's ids must fit in it.
    if (data.vocab_size > args.vocab_size)
      throw ArgumentError(fmt::format("--load-hf {}: the data's vocabulary ({} tokens) does not fit the model's {}",
                                      args.load_hf, data.vocab_size, args.vocab_size));
    vocab = args.vocab_size;
  }
  TransformerConfig cfg = model_config(args, vocab, tp_size);
  try {  // --save-hf: a Hugging Face class must hold the model (known now, not after training)
    if (!args.save_hf.empty()) hf_family_for(cfg);
  } catch (const UserError& e) {
    throw ArgumentError(fmt::format("--save-hf {}: {}", args.save_hf, e.what()));
  }
  ModelParallelConfig par;
  par.tp = &groups.tp();
  par.sequence_parallel = args.sequence_parallel;
  par.async_tp_allreduce = args.async_tensor_model_parallel_allreduce;
  par.tp_comm_overlap = args.tp_comm_overlap;
  par.cp = &groups.cp();
  par.cp_comm_type = args.cp_comm_type == "a2a" ? CpCommType::A2A : CpCommType::P2P;
  const int grad_dp_size = grad_dp.size();
  par.bucket_size = grad_dp_size > 1 ? (args.ddp_bucket_size > 0 ? args.ddp_bucket_size
                                                                 : default_ddp_bucket_size(grad_dp_size))
                                     : 0;
  par.bucket_pad = ddp_bucket_pad_multiple(grad_dp_size, args.use_distributed_optimizer);
  // MoE: experts split over the expert-parallel group, their weights replicated over expert-dp.
  Communicator& expert_dp = groups.expert_dp();
  par.ep = &groups.ep();
  par.dp = &dp;
  par.expert_bucket_pad = ddp_bucket_pad_multiple(expert_dp.size(), args.use_distributed_optimizer);
  // This rank's model chunks: stage v P + (pipeline rank) for each virtual stage v, in one buffer.
  const std::vector<ModelChunkConfig> stages = pipeline_stages(args);
  const int pp_size = groups.pp().size(), pp_rank = groups.coords().pp;
  const int virtual_stages = int(stages.size()) / pp_size;
  ParamAndGradBuffer buffer, expert_buffer;
  const bool moe = cfg.is_moe();
  std::vector<std::unique_ptr<GPTModel>> owned_chunks;
  std::vector<const GPTModel*> chunks;
  for (int v = 0; v < virtual_stages; ++v) {
    owned_chunks.push_back(std::make_unique<GPTModel>(cfg, dev, par, stages[size_t(v * pp_size + pp_rank)], buffer,
                                                      moe ? &expert_buffer : nullptr));
    chunks.push_back(owned_chunks.back().get());
  }
  buffer.set_bucketing(par.bucket_size, par.bucket_pad);
  buffer.allocate(cfg.params_dtype, dev);
  if (moe) {  // (a stage without MoE layers holds an empty one, so every rank steps the same optimizers)
    expert_buffer.set_bucketing(expert_dp.size() > 1 ? par.bucket_size : 0, par.expert_bucket_pad);
    expert_buffer.allocate(cfg.params_dtype, dev);
  }
  for (auto& c : owned_chunks) c->init(args.seed);  // by name and seed: the same values in any layout
  // A Hugging Face start: every rank copies its part of each parameter (before the optimizer takes
  // its fp32 master copy). A checkpoint in --load, loaded later, wins.
  if (!args.load_hf.empty()) load_hf_weights_into(args.load_hf, cfg, buffer, moe ? &expert_buffer : nullptr);
  const int64_t n_params = int64_t(groups.pp().all_reduce_scalar(double(chunks.front()->num_parameters())));
  const int64_t n_active =
      moe ? int64_t(groups.pp().all_reduce_scalar(double(chunks.front()->num_active_parameters()))) : n_params;
  PipelineScheduleKind schedule_kind = PipelineScheduleKind::OneFOneB;
  parse_pipeline_schedule(args.pipeline_schedule, schedule_kind);
  BatchLayout batch_layout;
  batch_layout.reset_position_ids = args.reset_position_ids;
  batch_layout.reset_attention_mask = args.reset_attention_mask;
  batch_layout.eod = data.eod;
  batch_layout.cp_size = cp_size;
  batch_layout.cp_rank = groups.cp().rank();
  PipelineSetup pipeline;
  pipeline.pp = &groups.pp();
  pipeline.kind = schedule_kind;
  pipeline.micro_batch_size = args.micro_batch_size;
  pipeline.seq_length = args.seq_length / cp_size;
  pipeline.explicit_positions = batch_layout.explicit_positions();
  PipelineTimes pipeline_times;
  if (args.timing_log_level > 0) pipeline.times = &pipeline_times;
  if (log0) {
    if (!args.model_preset_flags.empty())
      fmt::print(log0, "> model preset {}: {}\n", args.model_preset, args.model_preset_flags);
    fmt::print(log0, "> launcher: {}, world size {}; rank 0: local rank {}, device {}\n", dist::launcher_name(),
               groups.world_size(), dist::local_rank(), dev.str());
    fmt::print(log0, "> data: {}\n", data.description);
    fmt::print(log0, "> GPT: {} layers, hidden {}, ffn {}, heads {}, seq {}, vocab {} (padded {}), {}, device {}{}\n",
               cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_attention_heads, cfg.seq_length,
               cfg.vocab_size, cfg.padded_vocab_size, dtype_name(cfg.params_dtype), dev.str(),
               dev.is_cuda() ? "" : fmt::format(" ({} kernels)", cpu_isa_name()));
    if (describes_non_gpt2(cfg)) fmt::print(log0, "> architecture: {}\n", describe_architecture(cfg));
    fmt::print(log0, "> number of parameters: {}\n", n_params);
    if (moe)
      fmt::print(log0, "> MoE: {} experts (top-{}) in {} of {} layers, expert parallel {}; active parameters: {}\n",
                 cfg.num_moe_experts, cfg.moe_router_topk,
                 [&] { int n = 0; for (int l = 0; l < cfg.num_layers; ++l) n += cfg.is_moe_layer(l); return n; }(),
                 cfg.num_layers, groups.ep().size(), n_active);
    if (dev.is_cuda())
      fmt::print(log0, "{}\n", format_attention_choice({attention_has_cudnn(),
                                                        attention_backend() == AttentionBackend::Native,
                                                        args.bf16 || args.fp16, args.attention_dropout,
                                                        attention_deterministic()}));
    if (dev.is_cuda()) {
      const bool gemm = gemm_autotune(), attention = attention_has_cudnn() && attention_autotune();
      fmt::print(log0, "> autotuning: {}\n",
                 gemm || attention
                     ? fmt::format("{} timed per shape on first use (--deterministic-mode: the heuristics' "
                                   "choices, bit-reproducible)",
                                   gemm && attention ? "cuBLASLt GEMM algorithms and cuDNN attention plans"
                                   : gemm            ? "cuBLASLt GEMM algorithms"
                                                     : "cuDNN attention plans")
                     : std::string("off (the heuristics' GEMM algorithms and attention plans)"));
    }
    if (groups.world_size() > 1)
      fmt::print(log0,
                 "> parallel layout: world {} = tensor {} x {}pipeline {} x data {}{}{}; {} gradient bucket(s)\n",
                 groups.world_size(), tp_size,
                 cp_size > 1 ? fmt::format("context {} ({}) x ", cp_size, args.cp_comm_type) : std::string(), pp_size,
                 dp_size, args.sequence_parallel ? ", sequence parallel" : "",
                 args.use_distributed_optimizer ? ", distributed optimizer" : "", buffer.buckets().size());
    if (stages.size() > 1)
      fmt::print(log0, "> pipeline: {} schedule, {} virtual stage(s) per rank; {}\n",
                 pipeline_schedule_name(schedule_kind, virtual_stages), virtual_stages,
                 describe_pipeline_stages(stages));
  }

  OptimizerConfig ocfg{args.weight_decay, args.adam_beta1, args.adam_beta2, args.adam_eps, args.clip_grad};
  DDPConfig dcfg{args.use_distributed_optimizer, args.overlap_grad_reduce, args.overlap_param_gather};
  DistributedDataParallel ddp(buffer, grad_dp, dcfg);
  if (grad_dp_size > 1 && (args.overlap_grad_reduce || args.overlap_param_gather))
    for (auto& c : owned_chunks) c->set_param_hooks(&ddp);
  // The experts' gradients are reduced over expert-dp after the backward (no overlap).
  std::unique_ptr<DistributedDataParallel> expert_ddp;
  if (moe) expert_ddp = std::make_unique<DistributedDataParallel>(expert_buffer, expert_dp,
                                                                  DDPConfig{args.use_distributed_optimizer, false, false});
  const bool log_straggler = args.log_straggler && !args.disable_straggler_on_startup;
  dist::set_comm_timing(args.timing_log_level > 0 || log_straggler);
  GradNormGroups norm_groups;
  norm_groups.model_parallel = groups.mp().size() > 1 ? &groups.mp() : nullptr;
  norm_groups.tp_rank = groups.coords().tp;
  std::unique_ptr<MegatronOptimizer> optimizer_ptr, expert_optimizer, chained;
  if (args.use_distributed_optimizer) {
    norm_groups.data_parallel = &grad_dp;
    optimizer_ptr = std::make_unique<DistributedOptimizer>(buffer, ddp, ocfg, norm_groups);
  } else {
    optimizer_ptr = std::make_unique<AdamWOptimizer>(buffer, ocfg, norm_groups);
  }
  if (moe) {
    // Expert weights differ across tp, ep and pp: their norm sums over all three.
    GradNormGroups expert_norm;
    expert_norm.model_parallel = groups.expert_mp().size() > 1 ? &groups.expert_mp() : nullptr;
    expert_norm.tp_rank = groups.coords().tp;
    if (args.use_distributed_optimizer) {
      expert_norm.data_parallel = &expert_dp;
      expert_optimizer = std::make_unique<DistributedOptimizer>(expert_buffer, *expert_ddp, ocfg, expert_norm);
    } else {
      auto adam = std::make_unique<AdamWOptimizer>(expert_buffer, ocfg, expert_norm);
      adam->set_dp_replica(expert_dp.rank());
      expert_optimizer = std::move(adam);
    }
    chained = std::make_unique<ChainedOptimizer>(std::vector<MegatronOptimizer*>{optimizer_ptr.get(), expert_optimizer.get()});
  }
  MegatronOptimizer& optimizer = chained ? *chained : *optimizer_ptr;
  const MemoryEstimate predicted = estimate_memory(chunks.front()->config(), memory_layout(chunks, args, groups, !dev.is_cuda()));
  report_memory(log0, predicted, groups);
  // In iterations, or in samples with --train-samples; --decoupled-lr: the embedding and output layer's own.
  OptimizerParamScheduler scheduler(lr_schedule_config(args, args.lr, args.min_lr));
  LrScheduleConfig decoupled_cfg;
  const bool decoupled = decoupled_lr_schedule(args, decoupled_cfg);
  OptimizerParamScheduler decoupled_scheduler(decoupled_cfg);
  GradScalerConfig scfg;
  scfg.dynamic = args.loss_scale <= 0;
  scfg.initial_scale = scfg.dynamic ? args.initial_loss_scale : args.loss_scale;
  scfg.min_scale = args.min_loss_scale;
  scfg.growth_interval = args.loss_scale_window;
  scfg.hysteresis = args.hysteresis;
  GradScaler scaler(scfg);
  auto loss_scale = [&] { return args.fp16 ? scaler.scale() : 1.0; };
  // Optimizer shards and the replicas that do not write them (plain AdamW: every DP rank holds a
  // copy; so does every context-parallel rank, hence the dp-cp group's rank).
  if (auto* adam = dynamic_cast<AdamWOptimizer*>(optimizer_ptr.get())) adam->set_dp_replica(grad_dp.rank());
  std::vector<CheckpointPart> ckpt_parts{{&buffer, optimizer_ptr.get(), grad_dp.rank()}};
  if (moe) ckpt_parts.push_back({&expert_buffer, expert_optimizer.get(), expert_dp.rank()});
  std::vector<std::pair<std::string, Tensor>> persistent;
  for (const GPTModel* c : chunks)
    for (auto& b : c->persistent_buffers()) persistent.push_back(b);
  TrainCheckpointer ckpt(args, cfg, groups, ckpt_parts, persistent, scaler, log0);
  TrainProgress start;
  start.seed = args.seed;
  start = ckpt.load(start);
  const uint64_t rng_seed = start.seed;  // dropout masks: the seed and the global microbatch counter

  // Microbatches per rank and iteration; the loss gradient carries 1/(tokens x microbatches x
  // DP), so summing grads over DP gives the mean over the global batch (Megatron's 1/DP
  // gradient scaling, folded into dloss).
  const int num_micro = args.global_batch_size / (args.micro_batch_size * dp_size);
  const int64_t tokens_per_iter = int64_t(args.global_batch_size) * args.seq_length;
  const double flops_per_iter = flops_per_token(cfg) * double(tokens_per_iter);
  if (log0) {
    fmt::print(log0, "> training: {} iterations, global batch {} = {} microbatches of {} x data-parallel {}, seq {}\n",
               args.train_iters, args.global_batch_size, num_micro, args.micro_batch_size, dp_size, args.seq_length);
    fmt::print(log0, "> setup took {:.2f} s\n", seconds_since(t_start));
    std::fflush(log0);
  }

  TrainResult result;
  int64_t consumed = start.consumed_train_samples, valid_consumed = start.consumed_valid_samples;
  int64_t skipped_total = 0, nan_total = 0;
  double interval_loss = 0, interval_norm = 0;
  MoEMetrics moe_metrics;
  std::vector<std::pair<std::string, double>> interval_moe;  // MoE losses summed over the log interval
  int64_t interval_iters = 0, interval_steps = 0, last_eval = -1;
  auto t_interval = Clock::now();
  int64_t iteration = start.iteration;
  auto progress = [&] {
    TrainProgress p;
    p.iteration = iteration;
    p.consumed_train_samples = consumed;
    p.consumed_valid_samples = valid_consumed;
    p.seed = rng_seed;
    return p;
  };
  // --profile (Megatron's): the profiler's capture range covers iterations (start, end].
  const bool profiling = args.profile && std::find(args.profile_ranks.begin(), args.profile_ranks.end(),
                                                   groups.rank()) != args.profile_ranks.end();
  RerunStateMachine rerun(args.check_for_nan_in_loss_and_grad, parse_rerun_mode(args.rerun_mode), !args.fp16,
                          nan_injection(args.error_injection_rate, args.error_injection_type, rng_seed), groups.world(),
                          log0);
  StragglerDetector straggler(groups.world(), args.straggler_minmax_count);
  while (iteration < args.train_iters) {
    if (log_straggler) straggler.maybe_slow_down();  // the test hook
    if (profiling && iteration == args.profile_step_start) cuda_profiler_start();
    if (profiling && iteration == args.profile_step_end) cuda_profiler_stop();
    ++iteration;
    double scale = loss_scale();
    ScheduleConfig sc;
    sc.num_microbatches = num_micro;
    sc.loss_scale = scale;
    sc.data_parallel_size = dp_size;
    sc.context_parallel = &groups.cp();
    std::vector<double> loss_tokens;  // --calculate-per-token-loss: each microbatch's, then the global count
    if (args.calculate_per_token_loss) {
      loss_tokens = microbatch_loss_tokens(*data.train, args, consumed, num_micro, dp_size, dp_rank);
      double local = 0;
      for (double t : loss_tokens) local += t;
      sc.loss_tokens = dp_size > 1 ? dp.all_reduce_scalar(local) : local;
    }
    // Forward, backward and gradient reduction up to the optimizer step; run again from the same
    // state when rerun_state_machine.h says so (the grads are overwritten, the masks fixed).
    const IterationResult ir = rerun.run(iteration, [&] {
      buffer.begin_grad_accumulation();  // weight grads: overwritten by their first wgrad GEMM
      if (moe) expert_buffer.begin_grad_accumulation();
      moe_metrics.reset();
      const auto means = forward_backward(
          chunks, &ddp, pipeline,
          [&](int m) {
            return microbatch_of(get_batch(*data.train, microbatch_start(consumed, m, args.micro_batch_size, dp_size,
                                                                         dp_rank),
                                           args.micro_batch_size, args.seq_length, dev, batch_layout),
                                 args.eod_mask_loss);
          },
          // The global microbatch index (which fixes dropout masks) is the one a single rank would
          // give the same samples.
          [&](int m) {
            ForwardContext ctx{true, rng_seed, uint64_t((iteration - 1) * num_micro * dp_size + m * dp_size + dp_rank)};
            ctx.moe_loss_scale = scale / double(num_micro * dp_size);  // as each token's loss weight
            ctx.moe_metrics = &moe_metrics;
            return ctx;
          },
          sc);
      double iter_loss = 0;
      if (args.calculate_per_token_loss) {  // the sum over loss tokens over their count
        for (size_t m = 0; m < means.size(); ++m) iter_loss += means[m] * loss_tokens[m] / sc.loss_tokens;
      } else {
        for (double v : means) iter_loss += v / num_micro;
      }
      finalize_model_grads(ddp, chunks, groups.embedding());
      if (expert_ddp) expert_ddp->finish_grad_sync();
      if (rerun.poison(iteration)) iter_loss = std::nan("");  // the test hook
      const double local_loss = iter_loss;
      if (dp_size > 1) iter_loss = dp.all_reduce_scalar(iter_loss) / (args.calculate_per_token_loss ? 1 : dp_size);
      return IterationResult{local_loss, iter_loss, optimizer.grad_stats(scale)};
    });
    const double iter_loss = ir.loss;
    MoEMetrics moe_global;
    std::vector<std::pair<std::string, double>> moe_fields;  // this iteration's
    if (moe) {
      moe_global = reduce_moe_metrics(moe_metrics, cfg, groups);
      for (const GPTModel* c : chunks) c->update_expert_bias(moe_global);
      moe_fields = moe_log_fields(moe_global, cfg, args.moe_per_layer_logging);
      for (const auto& [name, v] : moe_fields) {
        auto it = std::find_if(interval_moe.begin(), interval_moe.end(), [&](const auto& p) { return p.first == name; });
        if (it == interval_moe.end())
          interval_moe.emplace_back(name, v);
        else
          it->second += v;
      }
    }
    double lr = scheduler.lr(lr_schedule_step(args, iteration));
    if (decoupled) optimizer.set_decoupled_lr(decoupled_scheduler.lr(lr_schedule_step(args, iteration)));
    StepStats st = optimizer.apply(lr, scale, ir.grads);
    if (args.fp16) scaler.update(st.skipped);
    consumed += args.global_batch_size;
    result.train_losses.push_back(iter_loss);
    result.grad_norms.push_back(st.skipped ? 0.0 : st.grad_norm);
    if (st.skipped) {
      ++skipped_total;
    } else {
      interval_norm += st.grad_norm;
      ++interval_steps;
    }
    if (!std::isfinite(iter_loss)) ++nan_total;
    metrics.iteration({.iteration = iteration, .consumed_samples = consumed, .learning_rate = lr,
                       .global_batch_size = args.global_batch_size, .lm_loss = iter_loss, .loss_scale = loss_scale(),
                       .grad_norm = st.grad_norm, .skipped_iters = st.skipped, .extra_losses = moe_fields});
    interval_loss += iter_loss;
    ++interval_iters;

    if (iteration % args.log_interval == 0) {
      double secs = seconds_since(t_interval);
      IterationLog l;
      l.iteration = iteration;
      l.train_iters = args.train_iters;
      l.consumed_samples = consumed;
      l.elapsed_ms_per_iter = 1000.0 * secs / double(interval_iters);
      l.tflops_per_gpu = flops_per_iter * double(interval_iters) / secs / 1e12 / groups.world_size();
      l.tokens_per_sec_per_gpu = double(tokens_per_iter) * double(interval_iters) / secs / groups.world_size();
      l.learning_rate = lr;
      l.global_batch_size = args.global_batch_size;
      l.lm_loss = interval_loss / double(interval_iters);
      l.loss_scale = loss_scale();
      l.grad_norm = interval_steps ? interval_norm / double(interval_steps) : 0.0;
      l.skipped_iters = skipped_total;
      l.nan_iters = nan_total;
      if (args.log_num_zeros_in_grad) l.num_zeros = double(optimizer.count_zeros_in_grads());
      if (args.log_params_norm) {
        ddp.finish_param_gather();  // --overlap-param-gather: the step's parameters, all there
        l.params_norm = params_norm(buffer, moe ? &expert_buffer : nullptr, groups);
      }
      for (auto& [name, v] : interval_moe) l.extra_losses.emplace_back(name, v / double(interval_iters));
      interval_moe.clear();
      if (log_last) {
        fmt::print(log_last, "{}\n", format_iteration_line(l));
        if (moe && args.moe_per_layer_logging) fmt::print(log_last, "{}", format_tokens_per_expert(moe_global, cfg));
        if (const std::string stats = rerun.take_stats(); !stats.empty()) fmt::print(log_last, "{}\n", stats);
        std::fflush(log_last);
      }
      const auto times = dist::comm_timing() ? dist::comm_time_take() : std::vector<std::pair<std::string, double>>{};
      if (log_straggler) {  // compute: the interval's time less the time waiting in collectives
        double waited = 0;
        for (const auto& [group, t] : times) waited += t;
        const std::string line = straggler.report(std::max(0.0, secs - waited) / double(interval_iters));
        if (log0) {
          fmt::print(log0, "{}\n", line);
          std::fflush(log0);
        }
      }
      if (args.timing_log_level > 0) {
        metrics.comm_times(iteration, times, interval_iters);
        if (log_last) {
          fmt::print(log_last, "{}\n", format_comm_times(times, interval_iters, 1000.0 * secs / double(interval_iters)));
          std::fflush(log_last);
        }
        if (pp_size > 1) {
          // Each stage's idle fraction of the schedule (host time), gathered to the last rank.
          std::vector<double> idle(size_t(pp_size), 0.0);
          idle[size_t(pp_rank)] =
              pipeline_times.total_s > 0 ? 1.0 - pipeline_times.compute_s / pipeline_times.total_s : 0.0;
          groups.pp().all_reduce_f64(idle.data(), pp_size);
          pipeline_times = PipelineTimes{};
          if (log_last) {
            std::string line = " pipeline bubble (idle fraction of the schedule per stage):";
            for (double v : idle) line += fmt::format(" {:.4f}", v);
            fmt::print(log_last, "{}\n", line);
            std::fflush(log_last);
          }
        }
      }
      metrics.log_line(l);
      interval_loss = interval_norm = 0;
      interval_iters = interval_steps = skipped_total = nan_total = 0;
    }
    const bool evaluating = data.valid && args.eval_iters > 0 && iteration % args.eval_interval == 0;
    const bool saving = !args.save.empty() && args.save_interval > 0 && iteration % args.save_interval == 0;
    if (evaluating || saving) ddp.finish_param_gather();
    if (evaluating) {
      double v = evaluate(chunks, pipeline, *data.valid, args, batch_layout, valid_consumed, dev, dp, groups.cp());
      result.valid_losses.push_back(v);
      metrics.validation(iteration, consumed, v);
      last_eval = iteration;
      if (log_last) {
        fmt::print(log_last, "{}\n", format_validation_block(fmt::format("at iteration {}", iteration), v));
        std::fflush(log_last);
      }
    }
    if (iteration % args.log_interval == 0) t_interval = Clock::now();  // evaluation time excluded
    ckpt.maybe_finalize();  // --async-save: complete a save in flight once written
    if (saving) ckpt.save(progress());
    if (!args.save_hf.empty() && args.save_interval > 0 && iteration % args.save_interval == 0)
      save_hf_directory(args, cfg, buffer, moe ? &expert_buffer : nullptr, groups, log0);
    // Exits (Megatron's): each saves a checkpoint with --save (after the loop) and ends with 0.
    std::string exit_reason;
    if (args.exit_signal_handler &&
        groups.world().all_reduce_scalar(exit_signal_received() ? 1.0 : 0.0, ReduceOp::Max) > 0) {
      exit_reason = fmt::format("{} (--exit-signal-handler)", *exit_signal_name() ? exit_signal_name() : "a signal on another rank");
      if (launcher_is_ending_job()) dist::skip_finalize_at_exit();
    }
    if (args.exit_duration_in_mins > 0 &&
        groups.world().all_reduce_scalar(seconds_since(t_start) / 60.0, ReduceOp::Max) > args.exit_duration_in_mins)
      exit_reason = fmt::format("--exit-duration-in-mins {}", args.exit_duration_in_mins);
    if (args.exit_interval > 0 && iteration % args.exit_interval == 0)
      exit_reason = fmt::format("--exit-interval {}", args.exit_interval);
    if (!exit_reason.empty()) {
      if (log0) fmt::print(log0, "> exiting at iteration {} ({})\n", iteration, exit_reason);
      break;
    }
  }
  result.iterations = iteration;
  if (profiling && iteration > args.profile_step_start && iteration <= args.profile_step_end) cuda_profiler_stop();
  ddp.finish_param_gather();
  if (!args.save.empty() && iteration > start.iteration && ckpt.last_saved_iteration() != iteration)
    ckpt.save(progress());
  ckpt.finalize();
  if (!args.save_hf.empty() && iteration > start.iteration &&
      !(args.save_interval > 0 && iteration % args.save_interval == 0))
    save_hf_directory(args, cfg, buffer, moe ? &expert_buffer : nullptr, groups, log0);
  if (data.valid && args.eval_iters > 0 && last_eval != iteration) {
    double v = evaluate(chunks, pipeline, *data.valid, args, batch_layout, valid_consumed, dev, dp, groups.cp());
    result.valid_losses.push_back(v);
    metrics.validation(iteration, consumed, v);
    if (log_last) fmt::print(log_last, "{}\n", format_validation_block("at the end of training", v));
  }
  // This rank's prediction is of the device that holds the model.
  result.predicted_peak_bytes = predicted.peak();
  result.measured_peak_bytes = int64_t(dev.is_cuda() ? cuda_peak_bytes(dev.index) : host_allocator().peak_bytes());
  if (log0) {
    const double pred = double(predicted.peak());
    if (dev.is_cuda())
      fmt::print(log0, "> peak host memory in tensors: {:.1f} MiB\n", double(host_allocator().peak_bytes()) / 1048576.0);
    else
      fmt::print(log0, "> peak host memory in tensors: {:.1f} MiB (predicted {:.1f} MiB)\n",
                 double(host_allocator().peak_bytes()) / 1048576.0, pred / 1048576.0);
    if (dev.is_cuda())
      fmt::print(log0, "> peak device memory in tensors: {:.2f} GiB (predicted {:.2f} GiB)\n",
                 double(cuda_peak_bytes(dev.index)) / 1073741824.0, pred / 1073741824.0);
  }
  if (opts.return_final_params) {
    const TrainResult whole = gather_model(buffer, moe ? &expert_buffer : nullptr, groups, persistent);
    result.final_params = whole.final_params;
    result.final_param_shapes = whole.final_param_shapes;
  }
  std::fflush(log);
  return result;
}

}  // namespace mt

