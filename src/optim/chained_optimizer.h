#pragma once
// ChainedOptimizer (Megatron's name): several optimizers stepped as one, each over its own buffer
// and process groups (an MoE model's dense parameters and its experts, reduced over different
// data-parallel groups). Their grad stats are combined first: the grads are finite only if all
// are, and the sum of squares is the sum of theirs, so every part sees one global grad norm and
// one --clip-grad coefficient, as a single optimizer over all parameters would.
#include <vector>

#include "optim/optimizer.h"

namespace mt {

class ChainedOptimizer : public MegatronOptimizer {
 public:
  explicit ChainedOptimizer(std::vector<MegatronOptimizer*> parts);
  GradStats grad_stats(double loss_scale) override;
  StepStats apply(double lr, double loss_scale, const GradStats& global) override;
  int64_t state_bytes() const override;
  // The parts' ranges are offsets into different buffers: checkpointing asks each part.
  std::vector<OptimizerStateRange> state_ranges() const override;
  int64_t steps_taken() const override { return parts_.front()->steps_taken(); }
  void set_steps_taken(int64_t steps) override;
  void reset_master_from_params() override;
  bool has_master_copy() const override { return parts_.front()->has_master_copy(); }
  void set_decoupled_lr(double lr) override;
  int64_t count_zeros_in_grads() override;
  const std::vector<MegatronOptimizer*>& parts() const { return parts_; }

 private:
  std::vector<MegatronOptimizer*> parts_;
};

}  // namespace mt
