#pragma once
// The microbatch loop of one iteration (Megatron-Core's pipeline_parallel/schedules.py): a
// schedule runs each microbatch's forward with the fused loss and its backward over the model,
// accumulating gradients in the model's buffers, and returns the iteration's loss;
// finalize_model_grads then completes the gradients. The trainer and the model hold no loop:
// forward_backward picks no pipelining or the pipeline executor, which runs a schedule's action
// lists (parallel/pipeline_schedule.h) over the rank's model chunks.
//
// The loss weights (dloss) are built on the host from the host-side loss mask and copied once
// per microbatch (with --eod-mask-loss); each microbatch's per-token losses stay on the device
// and are read after the loop, not after each microbatch. (The batch's own host-to-device copies
// still wait for the device once per microbatch: pinned buffers and async copies would lift that.)
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "model/gpt_model.h"
#include "parallel/distributed_data_parallel.h"
#include "parallel/pipeline_schedule.h"

namespace mt {

struct Microbatch {
  Tensor tokens, labels;  // int32 [B, T] on the model's device
  Tensor loss_mask;       // fp32 [B, T] on the host (undefined: every token counts)
  TokenPositions positions;  // context parallelism, document masks (model/token_positions.h)
};

struct ScheduleConfig {
  int num_microbatches = 1;
  bool forward_only = false;  // evaluation: no loss gradient, no backward
  // Each token's loss gradient is loss_scale / (tokens or mask sum) / (num_microbatches x
  // data_parallel_size): the mean over the microbatch and over the global batch's microbatches
  // (Megatron's 1/DP gradient scaling folded in, so that summing over data-parallel ranks gives
  // the global batch's mean), times the loss scale.
  double loss_scale = 1.0;
  int data_parallel_size = 1;
  // --calculate-per-token-loss: when > 0, the global batch's count of loss tokens (over every
  // microbatch and data-parallel rank); each token's loss gradient is then loss_scale x its mask
  // / loss_tokens (the sum over tokens divided by their count), not the mean of microbatch means.
  double loss_tokens = 0;
  // Context parallelism: the group over which each microbatch's tokens are spread. A
  // microbatch's mean is over all of its tokens (the counts summed over the group), and each
  // rank's token weights are its share of that mean (the gradients are then summed over the
  // data- and context-parallel group).
  Communicator* context_parallel = nullptr;
};

using MicrobatchSource = std::function<Microbatch(int m)>;
using MicrobatchContext = std::function<ForwardContext(int m)>;

// Megatron's forward_backward_no_pipelining. With ddp, the last microbatch's backward is marked
// so that overlapped gradient reduction starts during it. Returns each microbatch's mean token
// loss (masked mean where a mask is given), summed in double on the host in token order (and
// over the context-parallel group).
std::vector<double> forward_backward_no_pipelining(const GPTModel& model, DistributedDataParallel* ddp,
                                      const MicrobatchSource& microbatch, const MicrobatchContext& context,
                                      const ScheduleConfig& cfg);

// How the rank's model is pipelined: its pipeline group (null or of size 1: no pipelining),
// the schedule, and the microbatch's token grid (the activations' shape between stages).
// Host time of the executor's passes: compute (forward, backward and weight-gradient passes) and
// the whole schedule, accumulated over calls; their ratio is the stage's measured bubble (on the
// CPU; on a GPU the host runs ahead of the device and this does not measure the bubble).
struct PipelineTimes {
  double compute_s = 0, total_s = 0;
};

struct PipelineSetup {
  Communicator* pp = nullptr;
  PipelineScheduleKind kind = PipelineScheduleKind::OneFOneB;
  int64_t micro_batch_size = 1, seq_length = 1;  // seq_length: the rank's tokens per sample (S / CP)
  PipelineTimes* times = nullptr;  // accumulates when given
  // Every stage's layers need the microbatch's token positions (context parallelism, document
  // masks): each stage fetches the microbatch, not only the first and the last.
  bool explicit_positions = false;
};

// The pipeline executor: runs this rank's action list of `kind`'s schedule (pp.size() ranks,
// cfg.num_microbatches, chunks.size() virtual stages; chunks[v] is stage v P + rank) over the
// chunks, sharing one ParamAndGradBuffer. Transfers are posted as batches and waited for before
// the next forward or backward pass; ZB-H1's input-gradient passes defer their weight gradients
// (WeightGradStore) to the W actions. Returns each microbatch's mean loss on every rank of the
// pipeline group (computed on the last stage, shared exactly: an fp64 sum with zeros).
std::vector<double> forward_backward_pipelining(const std::vector<const GPTModel*>& chunks, DistributedDataParallel* ddp,
                                                const PipelineSetup& setup, const MicrobatchSource& microbatch,
                                                const MicrobatchContext& context, const ScheduleConfig& cfg);

// Megatron's get_forward_backward_func: no pipelining for one chunk without a pipeline group,
// else the pipeline executor.
std::vector<double> forward_backward(const std::vector<const GPTModel*>& chunks, DistributedDataParallel* ddp,
                                     const PipelineSetup& setup, const MicrobatchSource& microbatch,
                                     const MicrobatchContext& context, const ScheduleConfig& cfg);

// Megatron's finalize_model_grads: the tied word embeddings' gradients summed over the
// embedding group (first and last pipeline stage; before the data-parallel reduction, so that
// every optimizer layout sees the sum), the data-parallel bucket reductions, then the
// tensor-parallel all-reduce of the replicated parameters whose gradients are partial sums
// (sequence-parallel norms and biases, q/k norms) over the rank's buffer.
void finalize_model_grads(DistributedDataParallel& ddp, const std::vector<const GPTModel*>& chunks,
                          Communicator* embedding_group = nullptr);
inline void finalize_model_grads(DistributedDataParallel& ddp, const GPTModel& model) {
  finalize_model_grads(ddp, std::vector<const GPTModel*>{&model});
}

}  // namespace mt
