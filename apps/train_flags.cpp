#include "train_flags.h"

#include "metrics_flags.h"
#include "train/megatron_compat_flags.h"
#include "train/model_presets.h"

namespace mt {

void add_train_flags(CLI::App& app, TrainingArgs& a) {
  auto* g = "Model";
  app.add_option("--num-layers", a.num_layers, "Number of transformer layers")->capture_default_str()->group(g);
  app.add_option("--hidden-size", a.hidden_size, "Transformer hidden size")->capture_default_str()->group(g);
  app.add_option("--ffn-hidden-size", a.ffn_hidden_size, "MLP hidden size (0: 4 x hidden size)")
      ->capture_default_str()->group(g);
  app.add_option("--num-attention-heads", a.num_attention_heads, "Attention heads")->capture_default_str()->group(g);
  app.add_option("--seq-length", a.seq_length, "Sequence length")->capture_default_str()->group(g);
  app.add_option("--max-position-embeddings", a.max_position_embeddings,
                 "Position embedding table size (0: seq length)")->capture_default_str()->group(g);
  app.add_option("--vocab-size", a.vocab_size, "Vocabulary size (0: from the data)")->capture_default_str()->group(g);
  app.add_option("--make-vocab-size-divisible-by", a.make_vocab_size_divisible_by,
                 "Pad the vocabulary to a multiple of this")->capture_default_str()->group(g);
  app.add_option("--init-method-std", a.init_method_std, "Std of the normal weight init")
      ->capture_default_str()->group(g);
  app.add_option("--hidden-dropout", a.hidden_dropout, "Dropout on hidden states")->capture_default_str()->group(g);
  app.add_option("--attention-dropout", a.attention_dropout, "Dropout on attention probabilities")
      ->capture_default_str()->group(g);
  app.add_option("--layernorm-epsilon,--norm-epsilon", a.layernorm_epsilon, "Epsilon of LayerNorm and RMSNorm")
      ->capture_default_str()->group(g);
  app.add_option("--model-preset", a.model_preset,
                 "A common model's architecture flags (megatron.cpp's own; flags given explicitly win, the expansion "
                 "is printed at start): " + model_preset_names())->group(g);
  app.add_option("--normalization", a.normalization, "LayerNorm or RMSNorm")->capture_default_str()->group(g);
  app.add_flag("--swiglu", a.swiglu,
               "Gated SiLU MLP: linear_fc1 gives [gate | up], silu(gate) * up feeds linear_fc2 (without "
               "--ffn-hidden-size: 2/3 of 4 x hidden, a multiple of 64, as Megatron)")->group(g);
  app.add_flag("--group-query-attention", a.group_query_attention,
               "Grouped-query attention: --num-query-groups key/value heads shared by the query heads")->group(g);
  app.add_option("--num-query-groups", a.num_query_groups,
                 "Key/value heads with --group-query-attention (divides --num-attention-heads; split over "
                 "tensor-parallel ranks)")->capture_default_str()->group(g);
  app.add_option("--kv-channels", a.kv_channels, "Head dimension (0: hidden size / attention heads)")
      ->capture_default_str()->group(g);
  app.add_option("--position-embedding-type", a.position_embedding_type, "learned_absolute, rope or none")
      ->capture_default_str()->group(g);
  app.add_option("--rotary-base", a.rotary_base, "RoPE's base (theta)")->capture_default_str()->group(g);
  app.add_option("--rotary-percent", a.rotary_percent, "Share of each head's channels RoPE rotates, in (0, 1]")
      ->capture_default_str()->group(g);
  app.add_flag("--use-rope-scaling", a.use_rope_scaling, "Llama 3.1's RoPE frequency scaling")->group(g);
  app.add_option("--rope-scaling-factor", a.rope_scaling_factor, "The factor of --use-rope-scaling")
      ->capture_default_str()->group(g);
  app.add_option("--rope-type", a.rope_type,
                 "rope or yarn (YaRN frequencies and mscale, DeepSeek-V3; default: yarn with "
                 "--multi-latent-attention, else rope, as Megatron)")->group(g);
  app.add_option("--rotary-scaling-factor", a.rotary_scaling_factor, "YaRN's scaling factor")
      ->capture_default_str()->group(g);
  app.add_option("--mscale", a.mscale, "YaRN's mscale (the cos/sin tables' numerator)")->capture_default_str()->group(g);
  app.add_option("--mscale-all-dim", a.mscale_all_dim,
                 "YaRN's mscale_all_dim (the tables' denominator; multi-latent attention's softmax scale takes its "
                 "square)")->capture_default_str()->group(g);
  app.add_option("--original-max-position-embeddings", a.original_max_position_embeddings,
                 "YaRN's original context length")->capture_default_str()->group(g);
  app.add_flag("--multi-latent-attention", a.multi_latent_attention,
               "Multi-latent attention (DeepSeek-V2/V3): low-rank query and key/value latents, a RoPE key part "
               "shared by the heads (--qk-layernorm: RMSNorms over the latents)")->group(g);
  app.add_option("--q-lora-rank", a.q_lora_rank, "Multi-latent attention's query latent (0: one linear_q_proj)")
      ->capture_default_str()->group(g);
  app.add_option("--kv-lora-rank", a.kv_lora_rank, "Multi-latent attention's key/value latent")
      ->capture_default_str()->group(g);
  app.add_option("--qk-head-dim", a.qk_head_dim, "Multi-latent attention's query/key head size without RoPE")
      ->capture_default_str()->group(g);
  app.add_option("--qk-pos-emb-head-dim", a.qk_pos_emb_head_dim,
                 "Multi-latent attention's RoPE part of each query/key head")->capture_default_str()->group(g);
  app.add_option("--v-head-dim", a.v_head_dim, "Multi-latent attention's value head size")
      ->capture_default_str()->group(g);
  app.add_flag("--no-position-embedding", a.no_position_embedding,
               "No learned absolute position embedding (with --position-embedding-type learned_absolute: none; rope "
               "is unaffected), as Megatron's")->group(g);
  app.add_flag("--untie-embeddings-and-output-weights", a.untie_embeddings_and_output_weights,
               "A separate output layer (output_layer.weight) instead of the word embeddings'")->group(g);
  app.add_flag("--disable-bias-linear", a.disable_bias_linear, "No biases in the linear layers")->group(g);
  app.add_flag("--add-qkv-bias", a.add_qkv_bias, "Bias in linear_qkv even with --disable-bias-linear (Qwen 2)")
      ->group(g);
  app.add_flag("--qk-layernorm", a.qk_layernorm,
               "RMSNorm over each query and key head before RoPE (Qwen 3; needs --normalization RMSNorm)")->group(g);
  app.add_flag("--recompute-gelu", a.recompute_gelu,
               "Keep only the dense MLP's pre-activation and recompute its activation (GeLU, or SwiGLU with --swiglu) "
               "in backward for linear_fc2's weight gradient: tokens x ffn-hidden elements less per layer (6.4 GB for "
               "GPT 1.3B at 8 x 2048) for one elementwise pass (megatron.cpp's own flag, the module mlp_act of "
               "--recompute-modules; default: keep the activation's output)")->group(g);
  app.add_option("--recompute-granularity", a.recompute_granularity,
                 "Activation recomputation: full (whole transformer layers rerun in backward; needs "
                 "--recompute-method and --recompute-num-layers) or selective (the --recompute-modules). Bit-identical "
                 "results on CPU")->group(g);
  app.add_option("--recompute-method", a.recompute_method,
                 "With --recompute-granularity full: uniform (each model chunk's layers in groups of "
                 "--recompute-num-layers, only each group's input kept) or block (the first --recompute-num-layers "
                 "layers of each pipeline stage / virtual chunk recomputed, one by one, the others kept)")->group(g);
  app.add_option("--recompute-num-layers", a.recompute_num_layers,
                 "With --recompute-granularity full: Megatron's N (see --recompute-method). With --recompute-gelu: "
                 "recompute the activation in the first N transformer layers only (0: all layers)")
      ->capture_default_str()->group(g);
  app.add_option("--recompute-modules", a.recompute_modules,
                 "With --recompute-granularity selective (default: core_attn): core_attn (keep qkv, rerun the "
                 "flash-style core attention for its output and log-sum-exp: the [T, T] probabilities are never "
                 "stored anyway, so this saves the attention output), layernorm (keep the norms' inputs, rerun them "
                 "before the consuming linear's backward), mlp (dense MLP: keep its input), mlp_act (ours, = "
                 "--recompute-gelu), moe (the MoE layer, routing included: keep its input), moe_act (the experts' "
                 "activation), shared_experts (keep their input); with --multi-latent-attention core_attn and layernorm "
                 "apply to MLA, mla_up_proj is not built yet")->group(g);
  app.add_flag("--recompute-activations", a.recompute_activations,
               "Megatron's shorthand for --recompute-granularity selective")->group(g);
  app.add_option("--cross-entropy-chunks", a.cross_entropy_chunks,
                 "Run the output layer and the fused cross-entropy, with the output layer's backward, over this "
                 "many chunks of a microbatch's tokens: the logits take 1/N of their memory (1.65 GB at 16,384 "
                 "tokens x vocab 50,304 in bf16) for one more pass over the fp32 word-embedding gradient per "
                 "chunk (megatron.cpp's own flag)")->capture_default_str()->group(g);

  g = "Mixture of Experts";
  app.add_option("--num-experts", a.num_experts, "Experts per MoE layer (0: dense MLPs)")->capture_default_str()->group(g);
  app.add_option("--moe-ffn-hidden-size", a.moe_ffn_hidden_size, "Each expert's ffn width (0: --ffn-hidden-size)")
      ->capture_default_str()->group(g);
  app.add_option("--moe-router-topk", a.moe_router_topk, "Experts per token")->capture_default_str()->group(g);
  app.add_option("--moe-router-score-function", a.moe_router_score_function, "softmax or sigmoid")
      ->capture_default_str()->group(g);
  app.add_flag("--moe-router-pre-softmax", a.moe_router_pre_softmax,
               "Softmax over all experts before the top-k (default: softmax over the top-k logits)")->group(g);
  app.add_option("--moe-router-topk-scaling-factor", a.moe_router_topk_scaling_factor,
                 "Multiply the top-k probabilities by this (0: no scaling)")->capture_default_str()->group(g);
  app.add_option("--moe-router-num-groups", a.moe_router_num_groups,
                 "Group-limited routing (DeepSeek-V3): the experts in this many equal groups (0: off)")
      ->capture_default_str()->group(g);
  app.add_option("--moe-router-group-topk", a.moe_router_group_topk,
                 "With --moe-router-num-groups: each token chooses among the experts of this many groups, those "
                 "whose best topk / group-topk scores sum highest")->capture_default_str()->group(g);
  app.add_option("--moe-router-dtype", a.moe_router_dtype,
                 "fp32 or fp64: accepted; the routing (softmax, top-k, losses) always runs in double precision on "
                 "fp32 logits")->group(g);
  app.add_option("--moe-layer-freq", a.moe_layer_freq,
                 "MoE layers: N for every Nth layer (from layer 0), or a list of 0/1 per layer such as [0,1,1,1]")
      ->capture_default_str()->group(g);
  app.add_option("--moe-shared-expert-intermediate-size", a.moe_shared_expert_intermediate_size,
                 "ffn width of the shared experts every token also goes through (0: none)")
      ->capture_default_str()->group(g);
  app.add_option("--moe-router-load-balancing-type", a.moe_router_load_balancing_type,
                 "aux_loss (over each microbatch), seq_aux_loss (over each sequence), global_aux_loss (loads counted "
                 "over the data-parallel ranks' microbatches) or none")
      ->capture_default_str()->group(g);
  app.add_option("--moe-aux-loss-coeff", a.moe_aux_loss_coeff, "Weight of the load-balancing loss")
      ->capture_default_str()->group(g);
  app.add_option("--moe-z-loss-coeff", a.moe_z_loss_coeff, "Weight of the router z-loss")->capture_default_str()->group(g);
  app.add_flag("--moe-router-enable-expert-bias", a.moe_router_enable_expert_bias,
               "Aux-loss-free balancing: a per-expert bias on the routing scores, moved after each step toward the "
               "mean load")->group(g);
  app.add_option("--moe-router-bias-update-rate", a.moe_router_bias_update_rate, "The expert bias's step")
      ->capture_default_str()->group(g);
  app.add_option("--moe-expert-capacity-factor", a.moe_expert_capacity_factor,
                 "Each expert takes at most ceil(tokens x topk / experts x factor) rows (default: dropless)")
      ->group(g);
  app.add_option("--moe-token-drop-policy", a.moe_token_drop_policy,
                 "Over capacity, keep the most probable choices (probs) or the earliest (position)")
      ->capture_default_str()->group(g);
  app.add_flag("--moe-pad-expert-input-to-capacity", a.moe_pad_expert_input_to_capacity,
               "With a capacity factor: pad every expert's input to the capacity")->group(g);
  app.add_option("--moe-token-dispatcher-type", a.moe_token_dispatcher_type,
                 "alltoall (rows exchanged with the ranks that hold their experts, counts first) or allgather (every "
                 "expert-parallel rank gathers all tokens, outputs reduce-scattered back)")->capture_default_str()->group(g);
  app.add_option("--expert-tensor-parallel-size", a.expert_tensor_parallel_size,
                 "Tensor parallelism inside each expert (must equal --tensor-model-parallel-size; 0: that)")
      ->capture_default_str()->group(g);
  app.add_flag("--moe-per-layer-logging", a.moe_per_layer_logging,
               "Log each MoE layer's losses and per-expert token counts")->group(g);
  app.add_flag("--moe-grouped-gemm", a.moe_grouped_gemm, "Accepted for Megatron launch scripts: the experts always run as grouped GEMMs")
      ->group(g);

  g = "Training";
  app.add_option("--micro-batch-size", a.micro_batch_size, "Samples per microbatch")->capture_default_str()->group(g);
  app.add_option("--global-batch-size", a.global_batch_size, "Samples per iteration (gradient accumulation)")
      ->capture_default_str()->group(g);
  app.add_option("--train-iters", a.train_iters, "Iterations to train")
      ->each([&a](const std::string&) { a.train_iters_given = true; })
      ->capture_default_str()->group(g);
  app.add_option("--train-samples", a.train_samples,
                 "Samples to train instead of --train-iters (Megatron's sample-based schedule: iterations = samples / "
                 "global batch; the LR schedule counts samples)")->group(g);
  app.add_flag("--calculate-per-token-loss", a.calculate_per_token_loss,
               "The loss (and its gradient) is the sum over the global batch's loss tokens divided by their count, "
               "not the mean of per-microbatch means (they differ where microbatches hold different numbers of loss "
               "tokens, e.g. with --eod-mask-loss)")->group(g);
  app.add_option("--seed", a.seed, "Random seed")->capture_default_str()->group(g);
  app.add_option("--attention-backend", a.attention_backend,
                 "auto, flash or fused (GPU: cuDNN's fused attention where it applies), unfused or local (our own "
                 "attention kernel); the CPU has one kernel")
      ->check(CLI::IsMember({"auto", "flash", "fused", "unfused", "local"}))->capture_default_str()->group(g);
  app.add_flag_callback("--use-flash-attn", [&a] { a.attention_backend = "flash"; },
                        "Megatron's older spelling of --attention-backend flash")->group(g);
  app.add_flag("--deterministic-mode", a.deterministic_mode,
               "Bit-reproducible GPU runs: cuDNN's deterministic attention backward, and the heuristics' GEMM "
               "algorithms and attention plans instead of autotuned ones (~3% slower; default: cuDNN's "
               "atomic-accumulation backward, run-to-run differences of an ulp, and autotuning)")->group(g);
  app.add_flag("--bf16", a.bf16, "bf16 parameters and activations, fp32 main grads and optimizer")->group(g);
  app.add_flag("--fp16", a.fp16, "fp16 parameters and activations with loss scaling")->group(g);
  app.add_option("--loss-scale", a.loss_scale, "Constant fp16 loss scale (0: dynamic)")->capture_default_str()->group(g);
  app.add_option("--initial-loss-scale", a.initial_loss_scale, "Initial dynamic loss scale")
      ->capture_default_str()->group(g);
  app.add_option("--min-loss-scale", a.min_loss_scale, "Minimum dynamic loss scale")->capture_default_str()->group(g);
  app.add_option("--loss-scale-window", a.loss_scale_window, "Iterations before the loss scale grows")
      ->capture_default_str()->group(g);
  app.add_option("--hysteresis", a.hysteresis, "Overflows tolerated before the loss scale shrinks")
      ->capture_default_str()->group(g);
  app.add_option("--device", a.device, "auto (cuda when a GPU is present), cpu or cuda")->capture_default_str()->group(g);

  g = "Optimizer and learning rate";
  app.add_option("--lr", a.lr, "Peak learning rate")->capture_default_str()->group(g);
  app.add_option("--min-lr", a.min_lr, "Learning rate at the end of decay")->capture_default_str()->group(g);
  app.add_option("--lr-decay-style", a.lr_decay_style, "constant, linear, cosine or inverse-square-root")
      ->capture_default_str()->group(g);
  app.add_option("--lr-decay-iters", a.lr_decay_iters, "Iterations of decay (0: train iters)")
      ->capture_default_str()->group(g);
  app.add_option("--lr-warmup-iters", a.lr_warmup_iters, "Iterations of linear warmup")->capture_default_str()->group(g);
  app.add_option("--lr-warmup-samples", a.lr_warmup_samples, "Samples of linear warmup (with --train-samples)")
      ->group(g);
  app.add_option("--lr-decay-samples", a.lr_decay_samples, "Samples of decay (with --train-samples; 0: train samples)")
      ->group(g);
  app.add_option("--lr-warmup-init", a.lr_warmup_init, "Learning rate the linear warmup starts from")
      ->capture_default_str()->group(g);
  app.add_option("--decoupled-lr", a.decoupled_lr,
                 "Peak learning rate of the input embedding and the output layer (their own schedule, of the same "
                 "shape; default: --lr)")->group(g);
  app.add_option("--decoupled-min-lr", a.decoupled_min_lr,
                 "Minimum learning rate of the input embedding and the output layer (default: --min-lr)")->group(g);
  app.add_option("--lr-warmup-fraction", a.lr_warmup_fraction, "Warmup as a fraction of decay iters (overrides iters)")
      ->group(g);
  app.add_option("--weight-decay", a.weight_decay, "Decoupled weight decay (not on biases and norms)")
      ->capture_default_str()->group(g);
  app.add_option("--clip-grad", a.clip_grad, "Global gradient-norm clip (0: off)")->capture_default_str()->group(g);
  app.add_option("--adam-beta1", a.adam_beta1, "Adam beta1")->capture_default_str()->group(g);
  app.add_option("--adam-beta2", a.adam_beta2, "Adam beta2")->capture_default_str()->group(g);
  app.add_option("--adam-eps", a.adam_eps, "Adam epsilon")->capture_default_str()->group(g);

  g = "Logging and evaluation";
  app.add_option("--log-interval", a.log_interval, "Iterations between log lines")->capture_default_str()->group(g);
  app.add_flag("--log-params-norm", a.log_params_norm,
               "Print the L2 norm of all parameters (\"params norm:\") in each iteration line")->group(g);
  app.add_flag("--log-num-zeros-in-grad", a.log_num_zeros_in_grad,
               "Print the number of gradient elements that are exactly zero (\"num zeros:\") in each iteration line")
      ->group(g);
  app.add_flag("--log-throughput", a.log_throughput,
               "Accepted: the iteration line always shows the throughput (TFLOP/s/GPU and tokens/s/GPU)")->group(g);
  app.add_option("--timing-log-level", a.timing_log_level,
                 "1: after each log line, the time this rank spent in collectives per group (ms per iteration)")
      ->check(CLI::Range(0, 2))->capture_default_str()->group(g);
  app.add_option("--eval-interval", a.eval_interval, "Iterations between evaluations")->capture_default_str()->group(g);
  app.add_option("--eval-iters", a.eval_iters, "Global batches per evaluation")->capture_default_str()->group(g);
  app.add_option("--exit-interval", a.exit_interval, "Exit when the iteration is a multiple of this (0: off)")
      ->capture_default_str()->group(g);
  app.add_option("--exit-duration-in-mins", a.exit_duration_in_mins,
                 "Save (with --save) and exit after this many minutes of training (0: off)")->group(g);
  app.add_flag("--exit-signal-handler", a.exit_signal_handler,
               "On SIGTERM/SIGINT save a checkpoint (with --save) at the end of the iteration and exit 0")->group(g);
  app.add_flag("--check-for-nan-in-loss-and-grad,!--no-check-for-nan-in-loss-and-grad", a.check_for_nan_in_loss_and_grad,
               "Stop when the loss or the grad norm is NaN/Inf (fp16: the loss only; the loss scaler skips "
               "overflowing steps), naming the iteration and the rank(s), before the optimizer step. Exit code 1: "
               "the run failed, unlike 2 (a rejected command line or input) (default: on)")
      ->capture_default_str()->group(g);
  app.add_option("--rerun-mode", a.rerun_mode,
                 "With the NaN check: validate_results re-runs a failing iteration once from the same state (same "
                 "data, dropout and parameters): finite then, a transient fault (said on stderr, training goes on "
                 "with the re-run's result); NaN again, training stops. report_stats runs every iteration twice "
                 "and reports how often the loss and grad norm differed (non-determinism). disabled: stop at once")
      ->check(CLI::IsMember({"disabled", "validate_results", "report_stats"}))->capture_default_str()->group(g);
  app.add_option("--error-injection-rate", a.error_injection_rate,
                 "Testing the NaN handling: make the loss NaN on about one iteration in N on a rank (0: off)")
      ->check(CLI::NonNegativeNumber)->capture_default_str()->group(g);
  app.add_option("--error-injection-type", a.error_injection_type,
                 "transient_error: the re-run is clean; persistent_error, correct_result: NaN again (one re-run "
                 "on the same device cannot tell these two apart)")
      ->check(CLI::IsMember({"transient_error", "persistent_error", "correct_result"}))->capture_default_str()->group(g);
  app.add_flag("--log-straggler", a.log_straggler,
               "Every log interval, rank 0 prints each rank's compute time (the iteration time less the time "
               "waiting in collectives): min, median, max, the --straggler-minmax-count slowest and fastest, and "
               "ranks slower than 1.10 x the median (and by 5 ms) by name")->group(g);
  app.add_option("--straggler-minmax-count", a.straggler_minmax_count,
                 "How many of the slowest and fastest ranks --log-straggler names")
      ->check(CLI::PositiveNumber)->capture_default_str()->group(g);
  app.add_flag("--disable-straggler-on-startup", a.disable_straggler_on_startup,
               "Accepted (Megatron's: the detector starts off until toggled); there is no run-time toggle here, "
               "so --log-straggler stays off with it")->group(g);
  app.add_option("--straggler-ctrlr-port", a.straggler_ctrlr_port,
                 "Accepted: Megatron's port to toggle the detector at run time (not served here)")
      ->check(CLI::Range(1, 65535))->capture_default_str()->group(g);
  app.add_flag("--profile", a.profile,
               "GPU: cudaProfilerStart/Stop around iterations (profile-step-start, profile-step-end] for a profiler "
               "started with capture off (ncu --profile-from-start off)")->group(g);
  app.add_option("--profile-step-start", a.profile_step_start, "Iterations done when profiling starts")
      ->capture_default_str()->group(g);
  app.add_option("--profile-step-end", a.profile_step_end, "Iterations done when profiling stops")
      ->capture_default_str()->group(g);
  app.add_option("--profile-ranks", a.profile_ranks, "Global ranks that profile")->capture_default_str()->group(g);

  g = "Checkpointing";
  app.add_option("--save", a.save, "Directory to save sharded checkpoints in (DIR/iter_0000100/)")->group(g);
  app.add_option("--save-interval", a.save_interval,
                 "Iterations between checkpoints (0: only at the end of training)")->capture_default_str()->group(g);
  app.add_option("--load", a.load,
                 "Directory to resume from (its latest complete iteration, or DIR/iter_0000100 for that one; any "
                 "TP/PP/DP layout). No checkpoint there is an error when --save holds checkpoints that training from "
                 "scratch would overwrite (see --allow-start-from-scratch)")->group(g);
  app.add_option("--ckpt-step", a.ckpt_step, "The iteration of --load to load (default: the latest)")->group(g);
  app.add_flag("--allow-start-from-scratch", a.allow_start_from_scratch,
               "Train from scratch, with a warning, when --load holds no checkpoint even though --save holds some "
               "(megatron.cpp's guard against a mistyped --load; Megatron-LM always starts from scratch)")->group(g);
  app.add_option("--load-hf", a.load_hf,
                 "Start from a Hugging Face model directory (config.json + safetensors): its architecture (flags "
                 "given win) and weights, under any TP/PP/DP layout; a checkpoint in --load, when there, wins")
      ->group(g);
  app.add_option("--save-hf", a.save_hf,
                 "Also write a Hugging Face directory (config.json, safetensors, and --load-hf's tokenizer files) at "
                 "every --save-interval and at the end")->group(g);
  app.add_flag("--async-save", a.async_save, "Write checkpoints on a background thread while training continues")
      ->group(g);
  app.add_option("--ckpt-keep-last", a.ckpt_keep_last,
                 "Keep only the newest K checkpoints, deleting older ones once a newer one is complete "
                 "(megatron.cpp extension; 0: keep all)")->capture_default_str()->group(g);
  app.add_flag("--no-load-optim", a.no_load_optim, "Do not load optimizer state (master weights, moments)")->group(g);
  app.add_flag("--no-load-rng", a.no_load_rng, "Do not load the random seed (use --seed)")->group(g);
  app.add_flag("--finetune", a.finetune,
               "Load the weights only and start at iteration 0 (no optimizer state, samples or scaler)")->group(g);

  g = "Data";
  app.add_option("--data-path", a.data_path,
                 "Indexed dataset prefixes (PREFIX.bin/.idx), optionally weighted: \"[W1] P1 [W2] P2 ...\" "
                 "(default: the bundled corpus)")
      ->group(g);
  app.add_option("--train-data-path", a.train_data_path, "Blend for the train split only (\"[W1] P1 ...\")")->group(g);
  app.add_option("--valid-data-path", a.valid_data_path, "Blend for the validation split only")->group(g);
  app.add_option("--test-data-path", a.test_data_path, "Blend for the test split only")->group(g);
  app.add_option("--split", a.split, "Train,valid,test split weights over documents")->capture_default_str()->group(g);
  app.add_option("--data-cache-path", a.data_cache_path, "Folder for the cached dataset indices (default: beside the data)")
      ->group(g);
  app.add_flag("--mock-data", a.mock_data, "Synthetic data (needs --vocab-size)")->group(g);
  app.add_flag("--eod-mask-loss", a.eod_mask_loss, "No loss on the token that follows an end of document")->group(g);
  app.add_flag("--reset-position-ids", a.reset_position_ids,
               "Position ids restart at 0 after each end-of-document token")->group(g);
  app.add_flag("--reset-attention-mask", a.reset_attention_mask,
               "Attention stays inside each document: a token after an end of document sees nothing up to it "
               "(attention then runs the block kernel with document masks, not cuDNN)")->group(g);
  app.add_option("--tokenizer-type", a.tokenizer_type,
                 "GPT2BPETokenizer, HuggingFaceTokenizer, SentencePieceTokenizer, GPTSentencePieceTokenizer, "
                 "Llama2Tokenizer or NullTokenizer")
      ->group(g);
  app.add_option("--vocab-file", a.vocab_file, "vocab.json (GPT2BPETokenizer)")->group(g);
  app.add_option("--merge-file", a.merge_file, "merges.txt (GPT2BPETokenizer)")->group(g);
  app.add_option("--tokenizer-model", a.tokenizer_model,
                 "tokenizer.json or its folder (HuggingFaceTokenizer), .model (SentencePiece tokenizers)")
      ->group(g);

  g = "Distributed";
  app.add_option("--tensor-model-parallel-size", a.tensor_model_parallel_size,
                 "Tensor-parallel ranks (attention heads, MLP and vocabulary split across them)")
      ->capture_default_str()->group(g);
  app.add_option("--pipeline-model-parallel-size", a.pipeline_model_parallel_size,
                 "Pipeline ranks: the layers split across them in order (embedding on the first, loss on the last)")
      ->capture_default_str()->group(g);
  app.add_option("--num-layers-per-virtual-pipeline-stage", a.num_layers_per_virtual_pipeline_stage,
                 "Interleaved schedule: layers per virtual stage (each pipeline rank holds num-layers / (P x this) "
                 "chunks)")->group(g);
  app.add_option("--num-virtual-stages-per-pipeline-rank", a.num_virtual_stages_per_pipeline_rank,
                 "Interleaved schedule: model chunks per pipeline rank")->capture_default_str()->group(g);
  app.add_option("--decoder-first-pipeline-num-layers", a.decoder_first_pipeline_num_layers,
                 "Uneven split: decoder layers on the first pipeline stage (the others split the rest evenly)")->group(g);
  app.add_option("--decoder-last-pipeline-num-layers", a.decoder_last_pipeline_num_layers,
                 "Uneven split: decoder layers on the last pipeline stage")->group(g);
  app.add_option("--pipeline-model-parallel-layout", a.pipeline_model_parallel_layout,
                 "Stages as Megatron's layout string: '|' between stages, E embedding, t decoder layer, L loss, X*n "
                 "repeats, (...) groups; e.g. \"Et*2|(tt|)*2,L\" (sets the virtual stages)")->group(g);
  app.add_option("--pipeline-schedule", a.pipeline_schedule,
                 "1f1b (interleaved with virtual stages) or zb-h1 (ours: zero-bubble H1, backward split into input- "
                 "and weight-gradient passes, weight gradients deferred into the bubbles)")
      ->capture_default_str()->group(g);
  app.add_flag("--overlap-p2p-communication", a.overlap_p2p_communication,
               "Accepted for Megatron compatibility: pipeline transfers are always posted as one batch per step and "
               "waited for only before the next forward or backward pass")->group(g);
  app.add_option("--context-parallel-size", a.context_parallel_size,
                 "Context-parallel ranks: each sequence is cut into 2 CP chunks and rank r holds chunks r and "
                 "2 CP - 1 - r (causal load balancing); attention runs over the whole sequence (--cp-comm-type)")
      ->capture_default_str()->group(g);
  app.add_option("--cp-comm-type", a.cp_comm_type,
                 "Context parallelism's exchange: p2p (ring attention: key/value blocks passed around the ranks, "
                 "partial outputs merged by their log-sum-exp) or a2a (Ulysses: all-to-all from tokens to heads and "
                 "back; the heads and query groups per tensor-parallel rank must divide by CP); Megatron's allgather "
                 "and a2a+p2p are accepted with --context-parallel-size 1 only")
      ->check(CLI::IsMember({"p2p", "a2a", "allgather", "a2a+p2p"}))
      ->capture_default_str()->group(g);
  app.add_option("--expert-model-parallel-size", a.expert_model_parallel_size, "Expert-parallel ranks (only 1 for now)")
      ->capture_default_str()->group(g);
  app.add_flag("--sequence-parallel", a.sequence_parallel,
               "Split LayerNorm/dropout regions along the sequence across tensor-parallel ranks")->group(g);
  app.add_flag("--async-tensor-model-parallel-allreduce", a.async_tensor_model_parallel_allreduce,
               "Column-parallel backward: reduce the input gradient over tensor-parallel ranks (reduce-scatter with "
               "--sequence-parallel) while the weight-gradient GEMM computes (GPU/NCCL: on a side stream)")
      ->group(g);
  app.add_flag("--tp-comm-overlap", a.tp_comm_overlap,
               "With --sequence-parallel: all-gather the tokens as one broadcast per tensor-parallel rank and run "
               "each block's GEMM as soon as it arrives (column-parallel forward, row-parallel backward), and "
               "reduce-scatter the row-parallel output as one reduce per rank as soon as each block's GEMM is done; "
               "implies --async-tensor-model-parallel-allreduce. Measured slower than without on 4 H200s (7B-class "
               "GPT, TP=4: 34% vs 44% MFU): NCCL broadcasts/reduces per block cost more than they hide")->group(g);
  app.add_flag("--use-tp-pp-dp-mapping", a.use_tp_pp_dp_mapping,
               "Megatron's tp-pp-dp rank order: accepted where it orders ranks like the default tp-cp-ep-dp-pp (no "
               "pipeline or no data parallelism); otherwise not supported yet")->group(g);
  app.add_flag("--use-distributed-optimizer", a.use_distributed_optimizer,
               "Shard fp32 master weights and Adam state across data-parallel ranks (ZeRO-1)")->group(g);
  app.add_flag("--overlap-grad-reduce", a.overlap_grad_reduce,
               "Start each gradient bucket's data-parallel reduction during backward, as soon as its grads are "
               "final (GPU/NCCL: on a side stream)")->group(g);
  app.add_flag("--overlap-param-gather", a.overlap_param_gather,
               "With --use-distributed-optimizer: leave the parameter all-gathers in flight after the step; each "
               "module's forward waits for its own bucket")->group(g);
  app.add_option("--ddp-bucket-size", a.ddp_bucket_size,
                 "Gradient bucket size in elements (0: max(40M, 1M x data-parallel size))")
      ->capture_default_str()->group(g);
  app.add_option("--distributed-timeout-minutes", a.distributed_timeout_minutes,
                 "A collective waiting longer than this aborts the job, naming the waiting rank")
      ->capture_default_str()->group(g);

  add_metrics_flags(app, a);
  // Megatron's flags without a meaning of their own here, each with what it does (its reason).
  g = "Megatron-LM compatibility (accepted, mapped, or not supported yet)";
  for (const CompatFlag& f : megatron_compat_flags()) {
    std::string help = f.reason;
    if (f.handling == CompatHandling::Unsupported) help = std::string("Not supported yet: ") + f.reason;
    const std::string name = f.name;
    if (f.arity == 0) {
      app.add_flag_callback(name, [&a, name] { a.megatron_flags[name] = {}; }, help)->group(g);
    } else if (f.arity == 1) {
      app.add_option_function<std::string>(name, [&a, name](const std::string& v) { a.megatron_flags[name] = {v}; },
                                           help)->group(g);
    } else {
      app.add_option_function<std::vector<std::string>>(
             name, [&a, name](const std::vector<std::string>& v) { a.megatron_flags[name] = v; }, help)
          ->group(g);
    }
  }
}

}  // namespace mt
