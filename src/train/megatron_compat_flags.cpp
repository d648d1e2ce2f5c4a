#include "train/megatron_compat_flags.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "core/error.h"
#include "kernels/attention.h"

namespace mt {
namespace {

using H = CompatHandling;
constexpr H NA = H::NotApplicable, MAP = H::Mapped, IGN = H::Ignored, NO = H::Unsupported;

const char* kFusion = "Accepted: a kernel-fusion choice of Megatron's PyTorch code; megatron.cpp's kernels are fixed "
                      "and compute the same math";

}  // namespace

const std::vector<CompatFlag>& megatron_compat_flags() {
  static const std::vector<CompatFlag> flags = {
      // Implementation choices of Megatron's PyTorch code that have no counterpart here.
      {"--use-mcore-models", 0, NA, "Accepted: the model is always Megatron-Core's GPT (the legacy model does not exist here)"},
      {"--transformer-impl", 1, NA,
       "Accepted: transformer_engine or local; megatron.cpp has one implementation (its own kernels; cuBLASLt and "
       "cuDNN on GPUs)",
       {"transformer_engine", "local"}},
      {"--distributed-backend", 1, NA,
       "Accepted: nccl or gloo; GPU tensors always go over NCCL and host tensors over MPI", {"nccl", "gloo"}},
      {"--disable-gloo-process-groups", 0, NA, "Accepted: there are no Gloo groups (host collectives use MPI)"},
      {"--no-persist-layer-norm", 0, NA, "Accepted: there is one LayerNorm kernel (no persistent variant)"},
      {"--no-masked-softmax-fusion", 0, NA, kFusion},
      {"--no-bias-gelu-fusion", 0, NA, kFusion},
      {"--no-bias-swiglu-fusion", 0, NA, kFusion},
      {"--no-bias-dropout-fusion", 0, NA, kFusion},
      {"--no-rope-fusion", 0, NA, kFusion},
      {"--cross-entropy-loss-fusion", 0, NA,
       "Accepted: the output layer's cross-entropy is always one fused kernel (vocab-parallel)"},
      {"--cross-entropy-fusion-impl", 1, NA, "Accepted: native or te; the fused cross-entropy is ours", {"native", "te"}},
      {"--moe-permute-fusion", 0, NA, "Accepted: token permutation for the experts is always one gather kernel"},
      {"--attention-softmax-in-fp32", 0, NA, "Accepted: the attention softmax is always computed in fp32"},
      {"--apply-query-key-layer-scaling", 0, NA,
       "Accepted: Megatron's fp16 guard (scores divided by the layer number before the softmax and multiplied back "
       "inside it); our softmax runs in fp32, where it changes nothing"},
      {"--no-gradient-accumulation-fusion", 0, MAP,
       "Accepted: weight-gradient GEMMs accumulate straight into the fp32 main gradients (what Megatron's fusion "
       "does); the unfused path's separate add gives the same sums"},
      {"--apply-layernorm-1p", 0, MAP,
       "Accepted: Megatron's zero-centred norm weight (1 + w, w from 0) is the same function, and the same Adam "
       "steps (norm weights are never decayed), as the ordinary weight from 1, which is what is stored (in bf16 "
       "the stored weight rounds differently)"},
      {"--accumulate-allreduce-grads-in-fp32", 0, NA,
       "Accepted: gradients always accumulate and are reduced in fp32 (main grads)"},
      {"--grad-reduce-in-bf16", 0, MAP,
       "Accepted: gradients are reduced in fp32 here (twice the bytes of bf16, never less precise)"},
      {"--ddp-average-in-collective", 0, NA,
       "Accepted: the 1/data-parallel average is folded into the loss gradient; the sum is the same average"},
      {"--disable-bf16-reduced-precision-matmul", 0, NA,
       "Accepted: bf16 GEMMs always accumulate in fp32 (cuBLAS reduced-precision reductions are never enabled)"},
      {"--manual-gc", 0, NA, "Accepted: there is no garbage collector in a C++ process (nothing to schedule)"},
      {"--manual-gc-interval", 1, NA, "Accepted: there is no garbage collector (see --manual-gc)"},
      {"--manual-gc-eval", 0, NA, "Accepted: there is no garbage collector (see --manual-gc)"},
      {"--empty-unused-memory-level", 1, NA,
       "Accepted: 0, 1 or 2; our allocator keeps no unused cache for torch.cuda.empty_cache to free", {"0", "1", "2"}},
      {"--init-model-with-meta-device", 0, NA, "Accepted: parameters are allocated once, in their flat buffer"},
      {"--enable-experimental", 0, NA, "Accepted: no features are gated behind it here"},
      {"--logging-level", 1, NA, "Accepted: Python's logging level; megatron.cpp's log has one level"},
      {"--test-mode", 0, NA, "Accepted: Megatron's self-test hook for its CI; no effect here"},
      {"--num-workers", 1, NA,
       "Accepted: samples are cut from the memory-mapped dataset on the training thread; no loader workers"},
      {"--no-mmap-bin-files", 0, NA,
       "Accepted: the .bin files are memory-mapped and read as samples need them; the samples are the same"},
      {"--no-create-attention-mask-in-dataloader", 0, NA,
       "Accepted: attention is causal inside the kernel; no mask tensor is ever built"},
      {"--tiktoken-pattern", 1, NA, "Accepted: only for TikTokenizer, which is not built (other tokenizers ignore it)"},
      {"--overlap-p2p-communication-warmup-flush", 0, NA,
       "Accepted: pipeline transfers are always posted as one batch per step (see --overlap-p2p-communication)"},
      {"--overlap-param-gather-with-optimizer-step", 0, NA,
       "Accepted: a GPU-overlap choice of Megatron's; with --overlap-param-gather the gathers already overlap the "
       "next forward"},
      {"--microbatch-group-size-per-virtual-pipeline-stage", 1, MAP,
       "Accepted: the interleaved schedule groups microbatches by the pipeline size (Megatron's default); another "
       "group size only reorders the same forward and backward passes"},
      {"--defer-embedding-wgrad-compute", 0, NA,
       "Accepted: Megatron's pipeline-bubble placement of the embedding's weight-gradient GEMM; same math "
       "(--pipeline-schedule zb-h1 defers every weight gradient)"},
      {"--wgrad-deferral-limit", 1, NA, "Accepted: see --defer-embedding-wgrad-compute"},
      {"--tp-comm-overlap-cfg", 1, NA,
       "Accepted: Transformer Engine's userbuffer settings; --tp-comm-overlap here needs none"},
      // Checkpointing: our sharded format, whatever Megatron format is named.
      {"--ckpt-format", 1, MAP,
       "torch_dist, torch, zarr or fsdp_dtensor: checkpoints are written in megatron.cpp's sharded format (per-rank "
       "shards, checksummed, resharded on load to any layout), whichever is named",
       {"torch_dist", "torch", "zarr", "fsdp_dtensor"}},
      {"--auto-detect-ckpt-format", 0, NA, "Accepted: --load reads megatron.cpp's sharded format"},
      {"--use-persistent-ckpt-worker", 0, NA,
       "Accepted: --async-save writes on a background thread that lives for the whole run"},
      {"--async-strategy", 1, NA, "Accepted: mcore or nvrx; --async-save has one strategy (a background thread)",
       {"mcore", "nvrx"}},
      {"--async-ckpt-use-cpu-shm", 0, NA, "Accepted: --async-save copies the shards to host memory before writing"},
      {"--ckpt-assume-constant-structure", 0, NA,
       "Accepted: a caching hint for PyTorch distributed checkpointing; our shard plan is computed once"},
      {"--ckpt-fully-parallel-save", 0, NA, "Accepted: every rank always writes its own shards in parallel"},
      {"--no-ckpt-fully-parallel-save", 0, NA, "Accepted: every rank always writes its own shards in parallel"},
      {"--ckpt-fully-parallel-load", 0, NA, "Accepted: every rank always reads its own shards"},
      {"--dist-ckpt-strictness", 1, NA,
       "Accepted: loads always check every tensor of the checkpoint against the model and stop at a mismatch "
       "(raise_all)",
       {"assume_ok_unexpected", "log_unexpected", "log_all", "raise_unexpected", "raise_all", "return_unexpected",
        "return_all", "ignore_all"}},
      {"--dist-ckpt-optim-fully-reshardable", 0, NA,
       "Accepted: distributed-optimizer state is always saved per parameter, reshardable to any layout"},
      {"--verify-integrity", 0, NA, "Accepted: every shard is checksummed when written and verified when loaded"},
      {"--use-checkpoint-opt_param-scheduler", 0, MAP,
       "Accepted: the learning-rate schedule is always the command line's (as --override-opt_param-scheduler); a "
       "run resumed with the flags it was saved with continues the checkpoint's schedule"},
      {"--override-opt_param-scheduler", 0, NA, "Accepted: the command line's learning-rate schedule always applies"},
      // Side features not built: warned about at start, training is unchanged.
      {"--wandb-project", 1, IGN, "Ignored with a warning: Weights & Biases logging is not built"},
      {"--wandb-entity", 1, IGN, "Ignored with a warning: Weights & Biases logging is not built"},
      {"--wandb-exp-name", 1, IGN, "Ignored with a warning: Weights & Biases logging is not built"},
      {"--wandb-save-dir", 1, IGN, "Ignored with a warning: Weights & Biases logging is not built"},
      // Features not built yet.
      {"--fp8-format", 1, NO, "fp8 training (train in --bf16)"},
      {"--fp8-recipe", 1, NO, "fp8 training (train in --bf16)"},
      {"--fp8-param-gather", 0, NO, "fp8 training (train in --bf16)"},
      {"--fp8-amax-history-len", 1, NO, "fp8 training (train in --bf16)"},
      {"--fp8-amax-compute-algo", 1, NO, "fp8 training (train in --bf16)"},
      {"--fp8-margin", 1, NO, "fp8 training (train in --bf16)"},
      {"--cpu-offloading", 0, NO, "activation offloading to host memory (use --recompute-granularity)"},
      {"--cpu-offloading-num-layers", 1, NO, "activation offloading to host memory (use --recompute-granularity)"},
      {"--cpu-offloading-activations", 0, NO, "activation offloading to host memory (use --recompute-granularity)"},
      {"--cpu-offloading-weights", 0, NO, "activation offloading to host memory (use --recompute-granularity)"},
      {"--hierarchical-context-parallel-sizes", -1, NO,
       "hierarchical context parallelism (a2a+p2p; use --cp-comm-type p2p or a2a)"},
      {"--mtp-num-layers", 1, NO, "multi-token prediction"},
      {"--mtp-loss-scaling-factor", 1, NO, "multi-token prediction"},
      {"--squared-relu", 0, NO, "the squared-ReLU MLP activation (use the default GeLU or --swiglu)"},
      {"--rotary-interleaved", 0, NO, "interleaved RoPE (the rotate-half convention is built)"},
      {"--apply-wd-to-qk-layernorm", 0, NO, "weight decay on the q/k norm weights (norms are never decayed)"},
      {"--attention-output-gate", 0, NO, "gated attention output"},
      {"--experimental-attention-variant", 1, NO, "linear and sparse attention variants (gated_delta_net, dsa)"},
      {"--linear-attention-freq", 1, NO, "linear attention (gated delta net)"},
      {"--linear-conv-kernel-dim", 1, NO, "linear attention (gated delta net)"},
      {"--linear-key-head-dim", 1, NO, "linear attention (gated delta net)"},
      {"--linear-value-head-dim", 1, NO, "linear attention (gated delta net)"},
      {"--linear-num-key-heads", 1, NO, "linear attention (gated delta net)"},
      {"--linear-num-value-heads", 1, NO, "linear attention (gated delta net)"},
      {"--dsa-indexer-n-heads", 1, NO, "DeepSeek sparse attention"},
      {"--dsa-indexer-head-dim", 1, NO, "DeepSeek sparse attention"},
      {"--dsa-indexer-topk", 1, NO, "DeepSeek sparse attention"},
      {"--dsa-indexer-loss-coeff", 1, NO, "DeepSeek sparse attention"},
      {"--moe-shared-expert-gate", 0, NO, "a gate on the shared expert's output"},
      {"--moe-router-force-load-balancing", 0, NO, "forced uniform routing for benchmarks"},
      {"--moe-flex-dispatcher-backend", 1, NO, "the flex token dispatcher (use --moe-token-dispatcher-type alltoall)"},
      {"--enable-gpt-oss", 0, NO, "gpt-oss's architecture (sink attention, windowed layers, clamped GLU)"},
      {"--quick-geglu", 0, NO, "gpt-oss's quick-GeGLU activation (use --swiglu)"},
      {"--glu-linear-offset", 1, NO, "gpt-oss's GLU offset (use --swiglu)"},
      {"--activation-func-clamp-value", 1, NO, "gpt-oss's clamped activation (use --swiglu)"},
      {"--softmax-type", 1, NO, "learnable-sink attention softmax (only vanilla)", {"vanilla"}},
      {"--window-size", 1, NO, "sliding-window attention (attention is full causal)"},
      {"--window-attn-skip-freq", 1, NO, "sliding-window attention (attention is full causal)"},
      {"--export-force-local-attention", 0, NO, "gpt-oss's local-attention export"},
      {"--step-batch-size-schedule", 1, NO, "a batch-size schedule (use a constant --global-batch-size)"},
      {"--rampup-batch-size", -1, NO, "batch-size ramp-up (use a constant --global-batch-size)"},
      {"--eval-global-batch-size", 1, NO, "evaluation at its own global batch size (evaluation uses --global-batch-size)"},
      {"--save-retain-interval", 1, NO, "retaining checkpoints at an interval (use --ckpt-keep-last)"},
      {"--check-weight-hash-across-dp-replicas-interval", 1, NO, "weight-hash checks across data-parallel replicas"},
      {"--num-distributed-optimizer-instances", 1, NO,
       "several distributed-optimizer instances (one instance shards over all data-parallel ranks)", {"1"}},
      {"--use-megatron-fsdp", 0, NO, "FSDP (use --use-distributed-optimizer: ZeRO-1)"},
      {"--use-torch-fsdp2", 0, NO, "FSDP (use --use-distributed-optimizer: ZeRO-1)"},
      {"--data-parallel-sharding-strategy", 1, NO, "FSDP sharding (use --use-distributed-optimizer: ZeRO-1)",
       {"no_shard", "optim"}},
      {"--megatron-fsdp-main-params-dtype", 1, NO, "FSDP (use --use-distributed-optimizer: ZeRO-1)"},
      {"--megatron-fsdp-main-grads-dtype", 1, NO, "FSDP (use --use-distributed-optimizer: ZeRO-1)"},
      {"--megatron-fsdp-grad-comm-dtype", 1, NO, "FSDP (use --use-distributed-optimizer: ZeRO-1)"},
      {"--fsdp-double-buffer", 0, NO, "FSDP (use --use-distributed-optimizer: ZeRO-1)"},
      {"--use-nccl-ub", 0, NO, "NCCL user buffers (FSDP)"},
      {"--fim-data", 0, NO, "fill-in-the-middle data"},
      {"--fim-rate", 1, NO, "fill-in-the-middle data"},
      {"--fim-spm-rate", 1, NO, "fill-in-the-middle data"},
      {"--use-mup", 0, NO, "muP parametrisation"},
      {"--mup-base-hidden-size", 1, NO, "muP parametrisation"},
      {"--export-te-mcore-model", 0, NO, "knowledge distillation (ModelOpt)"},
      {"--export-kd-teacher-load", 1, NO, "knowledge distillation (ModelOpt)"},
      {"--export-kd-cfg", 1, NO, "knowledge distillation (ModelOpt)"},
  };
  return flags;
}

std::vector<std::string> unsupported_features(const TrainingArgs& a) {
  std::vector<std::string> out;
  for (const CompatFlag& f : megatron_compat_flags()) {
    if (f.handling != H::Unsupported) continue;
    auto it = a.megatron_flags.find(f.name);
    if (it == a.megatron_flags.end()) continue;
    // A flag whose listed values are the ones we have is rejected only for other values.
    if (!f.values.empty() && it->second.size() == 1 &&
        std::find(f.values.begin(), f.values.end(), it->second[0]) != f.values.end())
      continue;
    std::string given = f.name;
    for (const std::string& v : it->second) given += " " + v;
    out.push_back(fmt::format("{}: {}", given, f.reason));
  }
  if (a.qk_layernorm && a.normalization != "RMSNorm")
    out.push_back("--qk-layernorm with --normalization LayerNorm: a LayerNorm over each query and key head (q/k "
                  "norms are RMSNorm: use --normalization RMSNorm)");
  if (a.moe_token_dispatcher_type == "flex")
    out.push_back("--moe-token-dispatcher-type flex: the flex token dispatcher (use alltoall or allgather)");
  return out;
}

void validate_compat_flags(const TrainingArgs& a) {
  for (const CompatFlag& f : megatron_compat_flags()) {
    if (f.handling == H::Unsupported || f.values.empty()) continue;
    auto it = a.megatron_flags.find(f.name);
    if (it == a.megatron_flags.end() || it->second.empty()) continue;
    if (std::find(f.values.begin(), f.values.end(), it->second[0]) == f.values.end())
      MT_USER_ERROR("{} '{}' must be one of {}", f.name, it->second[0], fmt::join(f.values, ", "));
  }
}

std::vector<std::string> apply_megatron_implications(TrainingArgs& a) {
  std::vector<std::string> notes;
  // arguments.py: sequence parallelism needs tensor parallelism; at TP=1 it is turned off.
  if (a.sequence_parallel && a.tensor_model_parallel_size == 1) {
    a.sequence_parallel = false;
    notes.push_back("--sequence-parallel is turned off: it needs --tensor-model-parallel-size > 1 (as Megatron does)");
  }
  // Sample-based training (arguments.py): as many iterations as whole global batches fit.
  if (a.train_samples > 0 && a.global_batch_size > 0 && !a.train_iters_given) {
    a.train_iters = a.train_samples / a.global_batch_size;
    notes.push_back(fmt::format("--train-samples {}: {} iterations of global batch {}", a.train_samples,
                                a.train_iters, a.global_batch_size));
  }
  if (a.no_position_embedding && a.position_embedding_type == "learned_absolute") {
    a.position_embedding_type = "none";
    notes.push_back("--no-position-embedding: no learned absolute position embedding (--position-embedding-type none)");
  }
  if (a.attention_backend != "auto") {
    const bool cudnn = a.attention_backend == "flash" || a.attention_backend == "fused";
    set_attention_backend(cudnn ? AttentionBackend::Cudnn : AttentionBackend::Native);
    notes.push_back(fmt::format("--attention-backend {}: {}", a.attention_backend,
                                cudnn ? "cuDNN's fused attention on GPUs where it applies (our kernel on CPU and "
                                        "with attention dropout)"
                                      : "megatron.cpp's own attention kernel"));
  }
  for (const CompatFlag& f : megatron_compat_flags()) {
    auto it = a.megatron_flags.find(f.name);
    if (it == a.megatron_flags.end()) continue;
    const std::string given = it->second.empty() ? f.name : fmt::format("{} {}", f.name, fmt::join(it->second, " "));
    if (f.handling == H::Ignored) {
      const std::string why = f.reason;  // "Ignored with a warning: WHY"
      notes.push_back(fmt::format("{}: ignored ({})", given, why.substr(why.find(": ") + 2)));
    }
  }
  if (auto it = a.megatron_flags.find("--ckpt-format"); it != a.megatron_flags.end() && (!a.save.empty() || !a.load.empty()))
    notes.push_back(fmt::format("--ckpt-format {}: checkpoints are megatron.cpp's sharded format "
                                "(DIR/iter_NNNNNNN/, per-rank shards; `megatron checkpoint inspect DIR`)",
                                it->second.at(0)));
  return notes;
}

}  // namespace mt
