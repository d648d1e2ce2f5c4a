#pragma once
// DistributedDataParallel (Megatron-Core's name): gradient reduction over the data-parallel
// group, bucket by bucket over a ParamAndGradBuffer.
//
// The loss gradient already carries 1/DP (the trainer folds Megatron's gradient scaling factor
// into dloss), so reduction is a plain sum. Without the distributed optimizer each bucket is
// all-reduced; with it each bucket is reduce-scattered so that rank r ends up with the summed
// grads of its shard [offset + r * numel/DP, offset + (r+1) * numel/DP) only, and after the
// optimizer step the updated parameter shards are all-gathered back into every rank's buffer.
//
// Overlap (Megatron's --overlap-grad-reduce / --overlap-param-gather): DDP is the model's
// ParamHooks. During the last microbatch's backward, a bucket's reduction starts (on the
// communicator's side stream) as soon as backward has finished all its parameters' grads, and
// finish_grad_sync() only starts the rest and waits. After the step the parameter all-gathers
// start in forward order and each module's forward waits for its own bucket only. Buckets start
// in the same order on every rank (the order backward finishes them), as NCCL requires. A
// backend that cannot overlap (MPI on host tensors) runs each collective when it is started:
// the result is bit-identical to the synchronous path.
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "model/param_buffer.h"
#include "model/param_hooks.h"

namespace mt {

struct DDPConfig {
  bool use_distributed_optimizer = false;
  bool overlap_grad_reduce = false;
  bool overlap_param_gather = false;  // needs use_distributed_optimizer
};

// Megatron's default bucket size: max(40M, 1M * DP) elements.
int64_t default_ddp_bucket_size(int dp_size);
// The padding every bucket needs: a multiple of DP shards of 16-element (64-byte) granules.
int64_t ddp_bucket_pad_multiple(int dp_size, bool use_distributed_optimizer);

class DistributedDataParallel final : public ParamHooks {
 public:
  DistributedDataParallel(ParamAndGradBuffer& buf, Communicator& dp, const DDPConfig& cfg);
  // Grads become final only in the last microbatch of an iteration: earlier ones accumulate.
  void set_last_microbatch(bool last) { last_microbatch_ = last; }
  // After the last microbatch's backward: reduce every bucket's grads over DP (start the buckets
  // not started yet, wait for all).
  void finish_grad_sync();
  // Distributed optimizer, after the step: all-gather the updated parameter shards (started and
  // left in flight with overlap_param_gather).
  void all_gather_params();
  // Waits for every parameter all-gather still in flight (before evaluation or a checkpoint).
  void finish_param_gather();
  // This rank's shard of bucket b (element range in the flat buffers).
  int64_t shard_offset(size_t b) const;
  int64_t shard_numel(size_t b) const;
  Communicator& dp() const { return dp_; }
  const DDPConfig& config() const { return cfg_; }

  void before_forward(int first, int end) override;
  void after_backward(int first, int end) override;

 private:
  void start_grad_reduce(size_t b);
  void start_param_gather(size_t b);

  ParamAndGradBuffer& buf_;
  Communicator& dp_;
  DDPConfig cfg_;
  bool last_microbatch_ = true;
  std::vector<int> bucket_of_;          // parameter id -> bucket
  std::vector<int> grads_pending_;      // per bucket: parameters whose grads are not final yet
  std::vector<std::unique_ptr<CommHandle>> grad_work_, param_work_;  // per bucket, in flight
};

}  // namespace mt
