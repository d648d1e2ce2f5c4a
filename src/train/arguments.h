#pragma once
// Training arguments, named and defaulted like Megatron-LM's (megatron/training/arguments.py).
// The model defaults are the embedded default: a small GPT that trains on the bundled corpus
// in about two minutes on two CPU cores.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/gpt_model.h"

namespace mt {

struct TrainingArgs {
  // model
  int num_layers = 4;
  int hidden_size = 128;
  int ffn_hidden_size = 0;  // 0: 4 * hidden_size
  int num_attention_heads = 4;
  int seq_length = 128;
  int max_position_embeddings = 0;  // 0: seq_length
  int64_t vocab_size = 0;           // 0: from the data (bundled corpus: 257 byte-level tokens)
  int64_t make_vocab_size_divisible_by = 128;
  float init_method_std = 0.02f;
  float hidden_dropout = 0.1f;
  float attention_dropout = 0.1f;
  float layernorm_epsilon = 1e-5f;
  // architecture (Megatron's flags; the defaults are GPT-2's)
  std::string normalization = "LayerNorm";  // LayerNorm | RMSNorm
  bool swiglu = false;                      // gated SiLU MLP
  bool group_query_attention = false;
  int num_query_groups = 1;                 // with group_query_attention (Megatron's default 1)
  int kv_channels = 0;                      // 0: hidden_size / num_attention_heads
  std::string position_embedding_type = "learned_absolute";  // learned_absolute | rope | none
  double rotary_base = 10000;
  double rotary_percent = 1.0;
  bool use_rope_scaling = false;            // Llama 3.1's RoPE frequency scaling
  double rope_scaling_factor = 8.0;
  // Multi-latent attention (Megatron's flags; q_lora_rank 0: no q LoRA, Megatron's None)
  bool multi_latent_attention = false;
  int q_lora_rank = 0;
  int kv_lora_rank = 32;
  int qk_head_dim = 128;
  int qk_pos_emb_head_dim = 64;
  int v_head_dim = 128;
  // --rope-type rope | yarn ("": yarn with multi-latent attention, else rope, as Megatron) and YaRN's knobs
  std::string rope_type;
  double rotary_scaling_factor = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  int original_max_position_embeddings = 4096;
  bool untie_embeddings_and_output_weights = false;
  bool disable_bias_linear = false;
  bool add_qkv_bias = false;
  bool qk_layernorm = false;
  std::string model_preset;                 // --model-preset NAME (ours), expanded by the app:
  std::string model_preset_flags;           // the flags it stood for (printed at start)
  bool recompute_gelu = false;  // recompute GeLU(fc1 out) in backward instead of keeping it
  int recompute_num_layers = 0;  // full: Megatron's N; with recompute_gelu: only the first N layers (0: all)
  std::string recompute_granularity;            // "" | full | selective (Megatron's; see recompute_args.h)
  std::string recompute_method;                 // "" | uniform | block (full only)
  std::vector<std::string> recompute_modules;   // selective; empty: Megatron's default [core_attn]
  bool recompute_activations = false;           // = --recompute-granularity selective
  int cross_entropy_chunks = 1;  // output layer + loss over this many token chunks
  // Mixture of Experts (Megatron's flags; num_experts 0: dense)
  int num_experts = 0;
  int moe_ffn_hidden_size = 0;                        // 0: --ffn-hidden-size
  int moe_router_topk = 2;
  std::string moe_router_score_function = "softmax";  // softmax | sigmoid
  bool moe_router_pre_softmax = false;
  double moe_router_topk_scaling_factor = 0;          // 0: none
  int moe_router_num_groups = 0;                      // group-limited routing (DeepSeek-V3); 0: off
  int moe_router_group_topk = 0;
  std::string moe_router_dtype;                       // accepted: fp32 or fp64 (the router always computes in fp64)
  std::string moe_layer_freq = "1";                   // N (every Nth layer) or a list "[1,0,1,1]"
  int moe_shared_expert_intermediate_size = 0;
  std::string moe_router_load_balancing_type = "aux_loss";  // aux_loss | seq_aux_loss | none
  double moe_aux_loss_coeff = 0;
  double moe_z_loss_coeff = 0;
  bool moe_router_enable_expert_bias = false;
  double moe_router_bias_update_rate = 1e-3;
  double moe_expert_capacity_factor = -1;             // < 0: dropless
  std::string moe_token_drop_policy = "probs";        // probs | position
  bool moe_pad_expert_input_to_capacity = false;
  std::string moe_token_dispatcher_type = "alltoall";
  int expert_tensor_parallel_size = 0;                // 0: --tensor-model-parallel-size
  bool moe_per_layer_logging = false;
  bool moe_grouped_gemm = false;                      // accepted: experts always run as grouped GEMMs
  // batch and schedule
  int micro_batch_size = 8;
  int global_batch_size = 16;
  int64_t train_iters = 200;
  bool train_iters_given = false;  // --train-iters on the command line (it excludes --train-samples)
  // Megatron's sample-based schedule: train_iters = train_samples / global batch; the LR warmup
  // and decay counted in samples (0: unset).
  int64_t train_samples = 0, lr_warmup_samples = 0, lr_decay_samples = 0;
  double lr_warmup_init = 0;  // the LR warmup starts here
  // Megatron's --decoupled-lr: the input embedding and output layer on their own LR schedule
  // (same shape, this peak and minimum; < 0: unset).
  double decoupled_lr = -1, decoupled_min_lr = -1;
  // The loss is a sum over tokens divided by the global batch's count of loss tokens (not a
  // mean of per-microbatch means).
  bool calculate_per_token_loss = false;
  double lr = 1e-3;
  double min_lr = 1e-4;
  std::string lr_decay_style = "cosine";
  int64_t lr_decay_iters = 0;      // 0: train_iters
  int64_t lr_warmup_iters = 0;
  double lr_warmup_fraction = -1;  // >= 0 overrides lr_warmup_iters
  double weight_decay = 0.1;
  double clip_grad = 1.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.95;
  double adam_eps = 1e-8;
  uint64_t seed = 1234;
  std::string attention_backend = "auto";  // Megatron's: flash|fused (cuDNN), unfused|local (ours), auto
  bool no_position_embedding = false;      // Megatron's: no learned absolute positions
  bool deterministic_mode = false;  // bit-reproducible GPU kernels (cuDNN attention backward, no autotuning)
  // precision
  bool bf16 = false;
  bool fp16 = false;
  double loss_scale = 0;  // > 0: constant loss scale for fp16
  double initial_loss_scale = 4294967296.0;
  double min_loss_scale = 1.0;
  int64_t loss_scale_window = 1000;
  int64_t hysteresis = 2;
  // logging, evaluation, exit
  int64_t log_interval = 10;
  bool log_params_norm = false;        // "params norm:" in the iteration line
  bool log_num_zeros_in_grad = false;  // "num zeros:" in the iteration line
  bool log_throughput = false;         // accepted: the throughput is always printed
  int timing_log_level = 0;  // 1: communication time per group after each log line
  int64_t eval_interval = 100;
  int64_t eval_iters = 10;
  int64_t exit_interval = 0;
  double exit_duration_in_mins = 0;  // > 0: save (with --save) and exit after this long
  bool exit_signal_handler = false;  // SIGTERM/SIGINT: save (with --save) at the end of the iteration, exit 0
  // NaN/Inf in the loss or grad norm (train/rerun_state_machine.h): stop naming the iteration and
  // rank(s), after re-running the iteration once (validate_results) to tell a transient fault.
  bool check_for_nan_in_loss_and_grad = true;
  std::string rerun_mode = "validate_results";  // Megatron's: disabled | validate_results | report_stats
  int64_t error_injection_rate = 0;              // Megatron's: inject a NaN loss once in about N iterations
  std::string error_injection_type = "transient_error";  // | persistent_error | correct_result
  // --log-straggler (train/straggler.h): per-rank compute time every log interval on rank 0.
  bool log_straggler = false;
  int straggler_minmax_count = 1;
  bool disable_straggler_on_startup = false;
  int straggler_ctrlr_port = 65535;  // accepted: no run-time toggle server
  // --profile: cudaProfilerStart before iteration profile_step_start + 1 and cudaProfilerStop
  // after iteration profile_step_end (Megatron's counting), on the ranks listed.
  bool profile = false;
  int64_t profile_step_start = 10, profile_step_end = 12;
  std::vector<int> profile_ranks{0};
  // TensorBoard (Megatron's flags) and JSON-lines metrics (ours): train/training_metrics.h
  std::string tensorboard_dir, log_jsonl;
  int64_t tensorboard_log_interval = 1, tensorboard_queue_size = 1000;
  bool log_timers_to_tensorboard = false, log_validation_ppl_to_tensorboard = false, log_memory_to_tensorboard = false;
  bool log_loss_scale_to_tensorboard = true, log_learning_rate_to_tensorboard = true, log_world_size_to_tensorboard = false;
  // checkpointing
  std::string save, load;
  int64_t save_interval = 0;  // 0: save only at the end of training (and on exit)
  bool async_save = false;
  int ckpt_keep_last = 0;  // megatron.cpp extension: keep only the newest K iterations (0: all)
  bool no_load_optim = false, no_load_rng = false;
  bool finetune = false;  // --load weights only; iteration, samples and optimizer start fresh
  int64_t ckpt_step = -1;                 // --load's iteration to load (-1: the latest)
  bool allow_start_from_scratch = false;  // --load finding no checkpoint trains from scratch, --save or not
  // data
  std::vector<std::string> data_path;  // Megatron's blend: "[weight] prefix ...", split by --split
  std::vector<std::string> train_data_path, valid_data_path, test_data_path;  // a blend per split
  std::string split = "969,30,1";
  std::string data_cache_path;  // where dataset indices are cached (default: beside the data)
  bool mock_data = false;
  bool eod_mask_loss = false;  // no loss on the token after an end of document
  bool reset_position_ids = false;    // positions restart after each end of document
  bool reset_attention_mask = false;  // attention stays inside each document
  // tokenizer (Megatron's names; empty type: none, or the bundled corpus's tokenizer.json)
  std::string tokenizer_type, vocab_file, merge_file, tokenizer_model;
  // device
  std::string device = "auto";  // auto: cuda when a GPU is present, else cpu
  // distributed (the data-parallel size is inferred: world / (tp * cp * ep * pp))
  int tensor_model_parallel_size = 1;
  int pipeline_model_parallel_size = 1;
  // Hugging Face in and out of training: start from DIR's weights (any layout); write a Hugging
  // Face directory at the end and at every --save-interval.
  std::string load_hf, save_hf;
  // Pipeline stages (parallel/pipeline_layout.h) and schedule (parallel/pipeline_schedule.h).
  int num_layers_per_virtual_pipeline_stage = 0;  // 0: unset
  int num_virtual_stages_per_pipeline_rank = 1;
  int decoder_first_pipeline_num_layers = -1;     // -1: unset
  int decoder_last_pipeline_num_layers = -1;
  std::string pipeline_model_parallel_layout;
  std::string pipeline_schedule = "1f1b";         // 1f1b (interleaved with virtual stages), zb-h1
  bool overlap_p2p_communication = false;
  int context_parallel_size = 1;
  std::string cp_comm_type = "p2p";  // p2p (ring attention) or a2a (Ulysses)
  int expert_model_parallel_size = 1;
  bool sequence_parallel = false;
  bool async_tensor_model_parallel_allreduce = false;
  bool tp_comm_overlap = false;  // needs sequence_parallel
  bool use_distributed_optimizer = false;
  bool use_tp_pp_dp_mapping = false;  // Megatron's rank order tp-pp-dp (only where it equals tp-cp-ep-dp-pp)
  bool overlap_grad_reduce = false;
  bool overlap_param_gather = false;  // needs use_distributed_optimizer
  int64_t ddp_bucket_size = 0;        // elements; 0: Megatron's default max(40M, 1M * DP)
  double distributed_timeout_minutes = 10;
  // Megatron flags without a field here (train/megatron_compat_flags.h): name -> values given.
  std::map<std::string, std::vector<std::string>> megatron_flags;
};

// A bad layout or argument found identically on every rank (raised by validation before any
// rank diverges): printed once, by rank 0, and every rank exits with code 2.
struct ArgumentError : UserError {
  using UserError::UserError;
};

// --ffn-hidden-size when not given: Megatron's default for the MLP kind.
int default_ffn_hidden_size(const TrainingArgs& a);

// Checks relations between arguments; throws UserError naming the flag on the first problem.
void validate_args(const TrainingArgs& a);
// The pipeline stages the arguments describe (UserError naming the flag when they do not fit).
std::vector<ModelChunkConfig> pipeline_stages(const TrainingArgs& a);
// Checks the parallel layout against the world size and the model (divisibility by TP, global
// batch by micro batch x DP); throws UserError naming the problem. Returns the DP size.
int validate_parallel_args(const TrainingArgs& a, int world_size);

}  // namespace mt
