#pragma once
// AdamW over a model chunk's flat buffers (Megatron's mixed-precision optimizer):
//   - fp32 models update the parameters in place;
//   - bf16/fp16 models keep an fp32 master copy of the flat buffer and write the rounded result
//     back into the model's parameters after each step.
// One step: unscale (1/loss_scale) and check for inf/nan (skip the step if found), global grad
// norm, clip coefficient (--clip-grad), then AdamW per parameter with decoupled weight decay
// (none on biases and LayerNorm weights). Unscale and clip are folded into AdamW's grad_scale.
// The distributed optimizer (sharding this state across data-parallel ranks) builds on it.
#include <cstdint>

#include "model/param_buffer.h"

namespace mt {

struct OptimizerConfig {
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip_grad = 1.0;  // 0 disables clipping
};

struct StepStats {
  bool skipped = false;    // inf/nan in the grads: no update
  double grad_norm = 0.0;  // of the unscaled grads, before clipping
};

class AdamWOptimizer {
 public:
  AdamWOptimizer(ParamAndGradBuffer& buf, const OptimizerConfig& cfg);
  // Grads in buf.main_grads() carry the loss scale `loss_scale`.
  StepStats step(double lr, double loss_scale);

  int64_t steps_taken() const { return step_; }
  const Tensor& master() const { return master_; }     // fp32 flat (aliases the params for fp32)
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }

 private:
  ParamAndGradBuffer& buf_;
  OptimizerConfig cfg_;
  Tensor master_, m_, v_;
  bool has_master_copy_;
  int64_t step_ = 0;
};

}  // namespace mt
