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
// --overlap-grad-reduce is accepted but not overlapped yet: the CPU/MPI path reduces every
// bucket synchronously after the last microbatch's backward (same result, no overlap).
#include <cstdint>

#include "dist/communicator.h"
#include "model/param_buffer.h"

namespace mt {

struct DDPConfig {
  bool use_distributed_optimizer = false;
  bool overlap_grad_reduce = false;  // accepted; reduction is synchronous for now
};

// Megatron's default bucket size: max(40M, 1M * DP) elements.
int64_t default_ddp_bucket_size(int dp_size);
// The padding every bucket needs: a multiple of DP shards of 16-element (64-byte) granules.
int64_t ddp_bucket_pad_multiple(int dp_size, bool use_distributed_optimizer);

class DistributedDataParallel {
 public:
  DistributedDataParallel(ParamAndGradBuffer& buf, Communicator& dp, const DDPConfig& cfg);
  // After the last microbatch's backward: reduce every bucket's grads over DP.
  void finish_grad_sync();
  // Distributed optimizer, after the step: all-gather the updated parameter shards.
  void all_gather_params();
  // This rank's shard of bucket b (element range in the flat buffers).
  int64_t shard_offset(size_t b) const;
  int64_t shard_numel(size_t b) const;
  Communicator& dp() const { return dp_; }

 private:
  ParamAndGradBuffer& buf_;
  Communicator& dp_;
  DDPConfig cfg_;
};

}  // namespace mt
