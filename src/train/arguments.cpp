#include "train/arguments.h"
#include "train/moe_args.h"
#include "train/recompute_args.h"
#include "train/training_metrics.h"
#include "train/megatron_compat_flags.h"

#include <fmt/format.h>

#include "core/error.h"
#include "comm/process_groups.h"
#include "optim/lr_schedule.h"
#include "parallel/pipeline_layout.h"
#include "parallel/pipeline_schedule.h"

namespace mt {

void validate_args(const TrainingArgs& a) {
  // Features first (before any size or world-size check): every flag naming one we lack, at once.
  if (const std::vector<std::string> missing = unsupported_features(a); !missing.empty())
    MT_USER_ERROR("not supported yet: {}", fmt::join(missing, "; "));
  validate_compat_flags(a);
  if (a.train_samples > 0 && a.train_iters_given)
    MT_USER_ERROR("--train-iters and --train-samples are mutually exclusive (give one)");
  if (a.train_samples < 0 || a.lr_warmup_samples < 0 || a.lr_decay_samples < 0)
    MT_USER_ERROR("--train-samples, --lr-warmup-samples and --lr-decay-samples must be >= 0");
  if (a.train_samples == 0 && (a.lr_warmup_samples > 0 || a.lr_decay_samples > 0))
    MT_USER_ERROR("--lr-warmup-samples and --lr-decay-samples need --train-samples (or use --lr-warmup-iters and "
                  "--lr-decay-iters)");
  if (a.train_samples > 0 && (a.lr_warmup_iters > 0 || a.lr_decay_iters > 0))
    MT_USER_ERROR("with --train-samples, give --lr-warmup-samples and --lr-decay-samples instead of --lr-warmup-iters "
                  "and --lr-decay-iters");
  if (a.train_samples > 0 && a.train_samples < a.global_batch_size)
    MT_USER_ERROR("--train-samples {} is less than one --global-batch-size {}", a.train_samples, a.global_batch_size);
  if (a.decoupled_min_lr >= 0 && a.decoupled_lr < 0)
    MT_USER_ERROR("--decoupled-min-lr needs --decoupled-lr");
  if (a.decoupled_lr >= 0 && a.decoupled_min_lr > a.decoupled_lr)
    MT_USER_ERROR("--decoupled-min-lr {} must be at most --decoupled-lr {}", a.decoupled_min_lr, a.decoupled_lr);
  if (a.use_tp_pp_dp_mapping && (a.context_parallel_size > 1 || a.expert_model_parallel_size > 1))
    MT_USER_ERROR("--use-tp-pp-dp-mapping with context or expert parallelism is not supported yet");
  auto positive = [](const char* flag, int64_t v) {
    if (v <= 0) MT_USER_ERROR("{} must be positive, got {}", flag, v);
  };
  positive("--num-layers", a.num_layers);
  positive("--hidden-size", a.hidden_size);
  positive("--num-attention-heads", a.num_attention_heads);
  positive("--seq-length", a.seq_length);
  positive("--micro-batch-size", a.micro_batch_size);
  positive("--global-batch-size", a.global_batch_size);
  positive("--train-iters", a.train_iters);
  positive("--log-interval", a.log_interval);
  if (a.kv_channels < 0) MT_USER_ERROR("--kv-channels must be >= 0 (0: hidden size / heads), got {}", a.kv_channels);
  if (!a.group_query_attention && a.num_query_groups != 1)
    MT_USER_ERROR("--num-query-groups {} needs --group-query-attention", a.num_query_groups);
  if (a.ffn_hidden_size < 0) MT_USER_ERROR("--ffn-hidden-size must be >= 0 (0: the default), got {}", a.ffn_hidden_size);
  if (a.ffn_hidden_size == 0 && default_ffn_hidden_size(a) <= 0)
    MT_USER_ERROR("--swiglu's default --ffn-hidden-size (2/3 of 4 x {} rounded down to a multiple of 64) is 0: give "
                  "--ffn-hidden-size",
                  a.hidden_size);
  if (a.kv_channels == 0 && a.hidden_size % a.num_attention_heads != 0)
    MT_USER_ERROR("--hidden-size {} is not divisible by --num-attention-heads {} (or set --kv-channels)", a.hidden_size,
                  a.num_attention_heads);
  if (a.normalization != "LayerNorm" && a.normalization != "RMSNorm")
    MT_USER_ERROR("--normalization '{}' must be LayerNorm or RMSNorm", a.normalization);
  if (a.group_query_attention) {
    positive("--num-query-groups", a.num_query_groups);
    if (a.num_attention_heads % a.num_query_groups != 0)
      MT_USER_ERROR("--num-query-groups {} does not divide --num-attention-heads {}", a.num_query_groups,
                    a.num_attention_heads);
  }
  if (a.position_embedding_type != "learned_absolute" && a.position_embedding_type != "rope" &&
      a.position_embedding_type != "none")
    MT_USER_ERROR("--position-embedding-type '{}' must be learned_absolute, rope or none", a.position_embedding_type);
  if (!(a.rotary_percent > 0 && a.rotary_percent <= 1))
    MT_USER_ERROR("--rotary-percent {} must be in (0, 1]", a.rotary_percent);
  if (a.position_embedding_type == "rope") {
    const int head_dim = a.kv_channels > 0 ? a.kv_channels : a.hidden_size / a.num_attention_heads;
    const int rot = int(float(head_dim) * float(a.rotary_percent));
    if (rot < 2 || rot % 2 != 0)
      MT_USER_ERROR("--rotary-percent {} of head dimension {} gives {} rotated channels; RoPE needs a positive even "
                    "number",
                    a.rotary_percent, head_dim, rot);
    if (!(a.rotary_base > 0)) MT_USER_ERROR("--rotary-base must be positive, got {}", a.rotary_base);
  }
  if (a.use_rope_scaling && a.position_embedding_type != "rope")
    MT_USER_ERROR("--use-rope-scaling needs --position-embedding-type rope");
  if (a.use_rope_scaling && !(a.rope_scaling_factor >= 1))
    MT_USER_ERROR("--rope-scaling-factor {} must be at least 1", a.rope_scaling_factor);
  if (a.multi_latent_attention) {
    if (a.q_lora_rank < 0) MT_USER_ERROR("--q-lora-rank {} must be 0 (no query latent) or positive", a.q_lora_rank);
    positive("--kv-lora-rank", a.kv_lora_rank);
    positive("--qk-head-dim", a.qk_head_dim);
    positive("--v-head-dim", a.v_head_dim);
    if (a.qk_pos_emb_head_dim < 2 || a.qk_pos_emb_head_dim % 2 != 0)
      MT_USER_ERROR("--qk-pos-emb-head-dim {} must be a positive even number (RoPE's channels)", a.qk_pos_emb_head_dim);
    if (a.group_query_attention)
      MT_USER_ERROR("--group-query-attention does not apply to --multi-latent-attention (its keys and values come "
                    "from one latent); drop it");
    if (a.use_rope_scaling) MT_USER_ERROR("--use-rope-scaling does not apply to --multi-latent-attention (use --rope-type yarn)");
    if (!(a.rotary_base > 0)) MT_USER_ERROR("--rotary-base must be positive, got {}", a.rotary_base);
  }
  if (!a.rope_type.empty() && a.rope_type != "rope" && a.rope_type != "yarn")
    MT_USER_ERROR("--rope-type '{}' must be rope or yarn", a.rope_type);
  if (a.rope_type == "yarn" && !a.multi_latent_attention && a.position_embedding_type != "rope")
    MT_USER_ERROR("--rope-type yarn needs --position-embedding-type rope or --multi-latent-attention");
  if (a.rope_type == "yarn" && a.use_rope_scaling)
    MT_USER_ERROR("--rope-type yarn and --use-rope-scaling are two RoPE scalings; pick one");
  if (!(a.rotary_scaling_factor > 0))
    MT_USER_ERROR("--rotary-scaling-factor {} must be positive", a.rotary_scaling_factor);
  if (a.original_max_position_embeddings <= 0)
    MT_USER_ERROR("--original-max-position-embeddings {} must be positive", a.original_max_position_embeddings);
  if (a.qk_layernorm && a.normalization != "RMSNorm")
    MT_USER_ERROR("--qk-layernorm needs --normalization RMSNorm (megatron.cpp's q/k norm is an RMSNorm)");
  if (a.global_batch_size % a.micro_batch_size != 0)
    MT_USER_ERROR("--global-batch-size {} is not divisible by --micro-batch-size {} (x data-parallel size 1)",
                  a.global_batch_size, a.micro_batch_size);
  if (a.max_position_embeddings != 0 && a.max_position_embeddings < a.seq_length)
    MT_USER_ERROR("--max-position-embeddings {} is smaller than --seq-length {}", a.max_position_embeddings,
                  a.seq_length);
  validate_recompute_args(a);
  positive("--cross-entropy-chunks", a.cross_entropy_chunks);
  if (int64_t(a.micro_batch_size) * a.seq_length < a.cross_entropy_chunks)
    MT_USER_ERROR("--cross-entropy-chunks {} is more than a microbatch's {} tokens", a.cross_entropy_chunks,
                  int64_t(a.micro_batch_size) * a.seq_length);
  if (a.bf16 && a.fp16) MT_USER_ERROR("--bf16 and --fp16 are mutually exclusive");
  validate_moe_args(a);
  validate_metrics_args(a);
  if (a.overlap_param_gather && !a.use_distributed_optimizer)
    MT_USER_ERROR("--overlap-param-gather needs --use-distributed-optimizer");
  LrDecayStyle style;
  if (!parse_lr_decay_style(a.lr_decay_style, style))
    MT_USER_ERROR("--lr-decay-style '{}' is not one of constant, linear, cosine, inverse-square-root",
                  a.lr_decay_style);
  if (a.lr < 0 || a.min_lr < 0 || a.min_lr > a.lr)
    MT_USER_ERROR("--min-lr {} must be between 0 and --lr {}", a.min_lr, a.lr);
  if (a.lr_warmup_fraction > 1.0) MT_USER_ERROR("--lr-warmup-fraction {} must be at most 1", a.lr_warmup_fraction);
  if (a.hidden_dropout < 0 || a.hidden_dropout >= 1)
    MT_USER_ERROR("--hidden-dropout {} must be in [0, 1)", a.hidden_dropout);
  if (a.attention_dropout < 0 || a.attention_dropout >= 1)
    MT_USER_ERROR("--attention-dropout {} must be in [0, 1)", a.attention_dropout);
  if (a.mock_data && !a.data_path.empty()) MT_USER_ERROR("--mock-data and --data-path are mutually exclusive");
  if (a.mock_data && a.vocab_size <= 0) MT_USER_ERROR("--mock-data needs --vocab-size");
  if (a.device != "cpu" && a.device != "cuda" && a.device != "auto")
    MT_USER_ERROR("--device '{}' must be auto, cpu or cuda", a.device);
  if (a.eval_iters < 0) MT_USER_ERROR("--eval-iters must be >= 0, got {}", a.eval_iters);
  if (a.save_interval < 0) MT_USER_ERROR("--save-interval must be >= 0, got {}", a.save_interval);
  if (a.ckpt_keep_last < 0) MT_USER_ERROR("--ckpt-keep-last must be >= 0, got {}", a.ckpt_keep_last);
  if (a.exit_duration_in_mins < 0) MT_USER_ERROR("--exit-duration-in-mins must be >= 0, got {}", a.exit_duration_in_mins);
  if (a.save_interval > 0 && a.save.empty()) MT_USER_ERROR("--save-interval needs --save DIR");
  if (a.eval_interval <= 0) MT_USER_ERROR("--eval-interval must be positive, got {}", a.eval_interval);
  if (a.profile && (a.profile_step_start < 0 || a.profile_step_end <= a.profile_step_start))
    MT_USER_ERROR("--profile-step-start {} and --profile-step-end {} must satisfy 0 <= start < end",
                  a.profile_step_start, a.profile_step_end);
}

int default_ffn_hidden_size(const TrainingArgs& a) {
  // Megatron: 4 h, or with --swiglu two thirds of it rounded down to a multiple of 64 (the gated
  // MLP's two fc1 halves keep the parameter count near the 4 h MLP's).
  return a.swiglu ? int((4.0 * a.hidden_size * 2.0 / 3.0) / 64) * 64 : 4 * a.hidden_size;
}

std::vector<ModelChunkConfig> pipeline_stages(const TrainingArgs& a) {
  PipelineLayoutArgs p;
  p.num_layers = a.num_layers;
  p.pipeline_size = a.pipeline_model_parallel_size;
  p.virtual_stages = a.num_virtual_stages_per_pipeline_rank;
  p.layers_per_virtual_stage = a.num_layers_per_virtual_pipeline_stage;
  p.first_stage_layers = a.decoder_first_pipeline_num_layers;
  p.last_stage_layers = a.decoder_last_pipeline_num_layers;
  p.layout = a.pipeline_model_parallel_layout;
  if (p.virtual_stages < 1)
    MT_USER_ERROR("--num-virtual-stages-per-pipeline-rank must be positive, got {}", p.virtual_stages);
  return plan_pipeline_stages(p);
}

int validate_parallel_args(const TrainingArgs& a, int world_size) {
  ParallelSizes s{a.tensor_model_parallel_size, a.context_parallel_size, a.expert_model_parallel_size,
                  a.pipeline_model_parallel_size};
  // Context parallelism's own requirements first: they hold for any world size.
  if (s.cp > 1) {
    if (a.seq_length % (2 * s.cp) != 0)
      MT_USER_ERROR("--seq-length {} is not divisible by 2 x --context-parallel-size {} (each sequence is cut into {} "
                    "chunks)", a.seq_length, s.cp, 2 * s.cp);
    if (a.num_experts > 0)
      MT_USER_ERROR("--context-parallel-size {} with --num-experts: context parallelism of MoE models is not built yet "
                    "(the experts' gradients would need the context-parallel ranks in their data-parallel group)", s.cp);
    if (a.cp_comm_type != "p2p" && a.cp_comm_type != "a2a")
      MT_USER_ERROR("--cp-comm-type {} with --context-parallel-size {}: not built (use p2p or a2a)", a.cp_comm_type,
                    s.cp);
    if (a.cp_comm_type == "a2a") {
      const int groups = a.group_query_attention ? a.num_query_groups : a.num_attention_heads;
      if ((a.num_attention_heads / s.tp) % s.cp != 0 || (groups / s.tp) % s.cp != 0)
        MT_USER_ERROR("--cp-comm-type a2a: the {} heads in {} query groups of each of the {} tensor-parallel ranks do "
                      "not divide by --context-parallel-size {} (use --cp-comm-type p2p)",
                      a.num_attention_heads / s.tp, groups / s.tp, s.tp, s.cp);
    }
  }
  const ParallelLayout l = ParallelLayout::make(s, world_size);
  if (s.ep > 1 && a.num_experts == 0)
    MT_USER_ERROR("--expert-model-parallel-size {}: expert parallelism needs an MoE model (--num-experts)", s.ep);
  const int moe_ffn = a.moe_ffn_hidden_size > 0 ? a.moe_ffn_hidden_size : (a.ffn_hidden_size > 0 ? a.ffn_hidden_size : default_ffn_hidden_size(a));
  if (a.num_experts > 0 && moe_ffn % s.tp != 0)
    MT_USER_ERROR("--moe-ffn-hidden-size {} is not divisible by --tensor-model-parallel-size {}", moe_ffn, s.tp);
  const int tp = s.tp;
  const int ffn = a.ffn_hidden_size > 0 ? a.ffn_hidden_size : default_ffn_hidden_size(a);
  if (a.num_attention_heads % tp != 0)
    MT_USER_ERROR("--num-attention-heads {} is not divisible by --tensor-model-parallel-size {}", a.num_attention_heads,
                  tp);
  if (a.group_query_attention && a.num_query_groups % tp != 0)
    MT_USER_ERROR("--num-query-groups {} is not divisible by --tensor-model-parallel-size {}", a.num_query_groups, tp);
  if (ffn % tp != 0)
    MT_USER_ERROR("--ffn-hidden-size {} is not divisible by --tensor-model-parallel-size {}", ffn, tp);
  if (a.sequence_parallel && a.seq_length % tp != 0)
    MT_USER_ERROR("--seq-length {} is not divisible by --tensor-model-parallel-size {} (needed by --sequence-parallel)",
                  a.seq_length, tp);
  if (a.sequence_parallel && tp == 1)
    MT_USER_ERROR("--sequence-parallel needs --tensor-model-parallel-size > 1");
  if (a.tp_comm_overlap && !a.sequence_parallel)
    MT_USER_ERROR("--tp-comm-overlap needs --sequence-parallel (it overlaps sequence parallelism's all-gathers)");
  if (a.make_vocab_size_divisible_by <= 0)
    MT_USER_ERROR("--make-vocab-size-divisible-by must be positive, got {}", a.make_vocab_size_divisible_by);
  if (a.global_batch_size % (int64_t(a.micro_batch_size) * l.dp) != 0)
    MT_USER_ERROR("--global-batch-size {} is not divisible by --micro-batch-size {} x data-parallel size {}",
                  a.global_batch_size, a.micro_batch_size, l.dp);
  if (a.ddp_bucket_size < 0) MT_USER_ERROR("--ddp-bucket-size must be >= 0, got {}", a.ddp_bucket_size);
  const std::vector<ModelChunkConfig> stages = pipeline_stages(a);
  PipelineScheduleKind kind;
  if (!parse_pipeline_schedule(a.pipeline_schedule, kind))
    MT_USER_ERROR("--pipeline-schedule {}: expected 1f1b, interleaved or zb-h1", a.pipeline_schedule);
  const int virtual_stages = int(stages.size()) / s.pp;
  if (s.pp > 1 || virtual_stages > 1) {
    const int micro = int(a.global_batch_size / (int64_t(a.micro_batch_size) * l.dp));
    const std::string problem = pipeline_schedule_problem(kind, s.pp, micro, virtual_stages);
    if (!problem.empty()) MT_USER_ERROR("{}", problem);
  }
  if (!(a.distributed_timeout_minutes > 0))
    MT_USER_ERROR("--distributed-timeout-minutes must be positive, got {}", a.distributed_timeout_minutes);
  return l.dp;
}

}  // namespace mt
