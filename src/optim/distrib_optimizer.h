#pragma once
// DistributedOptimizer (Megatron's name; ZeRO stage 1): the fp32 master weights and Adam's m and
// v are sharded over the data-parallel group. Rank r owns, in every bucket of the flat buffer,
// the contiguous range [offset + r * numel/DP, offset + (r+1) * numel/DP) (see
// DistributedDataParallel). One step:
//   grads of the shard arrive reduce-scattered (DistributedDataParallel::finish_grad_sync);
//   inf/nan verdict and sum of squares of the shard, all-reduced over DP and model parallel;
//   AdamW on each parameter's piece inside the shard (weight decay by parameter, so a shard
//   boundary inside a parameter just splits it into two pieces on two ranks);
//   the updated shards are all-gathered into every rank's parameter buffer.
// The result equals the unsharded AdamWOptimizer's up to the order of the norm's summation.
#include <vector>

#include "optim/optimizer.h"
#include "parallel/distributed_data_parallel.h"

namespace mt {

class DistributedOptimizer : public MegatronOptimizer {
 public:
  DistributedOptimizer(ParamAndGradBuffer& buf, DistributedDataParallel& ddp, const OptimizerConfig& cfg,
                       const GradNormGroups& groups);
  GradStats grad_stats(double loss_scale) override;
  StepStats apply(double lr, double loss_scale, const GradStats& global) override;
  int64_t state_bytes() const override;
  int64_t steps_taken() const override { return step_; }
  void set_steps_taken(int64_t steps) override { step_ = steps; }
  // One range per parameter piece of this rank's shard (padding between parameters holds no state).
  std::vector<OptimizerStateRange> state_ranges() const override;
  void reset_master_from_params() override;
  bool has_master_copy() const override { return has_master_copy_; }
  int64_t count_zeros_in_grads() override;

 private:
  struct Piece {  // one parameter's part of this rank's shard
    int param;
    int64_t offset, numel;  // in the flat buffers
    int64_t state;          // offset in the shard-local state tensors
  };
  ParamAndGradBuffer& buf_;
  DistributedDataParallel& ddp_;
  OptimizerConfig cfg_;
  GradNormGroups groups_;
  std::vector<Piece> pieces_;
  std::vector<std::pair<int64_t, int64_t>> shards_;  // per bucket: flat offset, numel
  Tensor master_, m_, v_;  // shard-local, fp32 (master only for bf16/fp16 models)
  bool has_master_copy_;
  int64_t step_ = 0;
};

}  // namespace mt
