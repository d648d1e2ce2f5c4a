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
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/optimizer.h"
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

// Where the global grad norm and the inf/nan verdict are reduced beyond this rank. Parameters
// replicated across tensor parallelism count once (on tp rank 0), as in Megatron.
struct GradNormGroups {
  Communicator* model_parallel = nullptr;  // tp x pp; null: this rank holds the whole model
  int tp_rank = 0;
  Communicator* data_parallel = nullptr;   // distributed optimizer: grads are sharded over DP
};

// A contiguous range [offset, offset + numel) of the flat buffers whose optimizer state this
// rank holds (checkpointing): views of the fp32 state, `master` undefined when the parameters
// are their own master (fp32 models). dp_replica: 0 when this rank is the only holder (the
// distributed optimizer's shard), else the data-parallel rank (every DP rank holds a copy).
struct OptimizerStateRange {
  int64_t offset = 0, numel = 0;
  Tensor master, exp_avg, exp_avg_sq;
  int dp_replica = 0;
};

// A step's collective part: whether the grads are all finite (checked with a loss scale other
// than 1) and the sum of squares of the (scaled) grads, reduced over the optimizer's groups.
struct GradStats {
  bool finite = true;
  double sum_squares = 0;
};

// The interface the training loop steps (Megatron's MegatronOptimizer).
class MegatronOptimizer {
 public:
  virtual ~MegatronOptimizer() = default;
  // Grads in the main-grad buffer carry the loss scale `loss_scale`: grad_stats, then apply.
  StepStats step(double lr, double loss_scale) { return apply(lr, loss_scale, grad_stats(loss_scale)); }
  // Megatron's --decoupled-lr: the word embeddings and the output layer step with this learning
  // rate instead of apply's (negative: apply's). Set before each step.
  virtual void set_decoupled_lr(double lr) { decoupled_lr_ = lr; }
  // Gradient elements exactly zero, each counted once over the model (as the grad norm counts
  // them; collective over the same groups): Megatron's --log-num-zeros-in-grad.
  virtual int64_t count_zeros_in_grads() = 0;
  virtual GradStats grad_stats(double loss_scale) = 0;
  // The update given the stats of every optimizer stepped together (ChainedOptimizer: their sum
  // of squares makes one global norm and one clip coefficient); skipped when not finite.
  virtual StepStats apply(double lr, double loss_scale, const GradStats& global) = 0;
  // Bytes of optimizer state this rank holds (fp32 master copy when separate, Adam m and v).
  virtual int64_t state_bytes() const = 0;
  // Checkpointing: the state this rank holds (views; loading writes into them), the step
  // count (Adam's bias correction), and re-deriving the fp32 master from the parameters (a
  // checkpoint without master weights).
  virtual std::vector<OptimizerStateRange> state_ranges() const = 0;
  virtual int64_t steps_taken() const = 0;
  virtual void set_steps_taken(int64_t steps) = 0;
  virtual void reset_master_from_params() = 0;
  virtual bool has_master_copy() const = 0;

 protected:
  double decoupled_lr_ = -1;
};

// Megatron's is_embedding_or_output_parameter: the parameters --decoupled-lr applies to.
bool is_embedding_or_output_parameter(const std::string& name);
// adamw_step_ranges with the ranges of embedding/output parameters (flagged in `decoupled`) at
// learning rate `decoupled_lr` when it is >= 0.
void adamw_step_ranges_decoupled(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                                 const Tensor* param_out, const std::vector<AdamWRange>& ranges,
                                 const std::vector<bool>& decoupled, const AdamWParams& p, double decoupled_lr);
// Zero elements among the grads this rank contributes to the global norm (as local_grad_sum_squares).
int64_t local_grad_count_zeros(const ParamAndGradBuffer& buf, int64_t lo, int64_t hi, const GradNormGroups& g);

// Sum of squares of the grads this rank contributes to the global norm (shard [lo, hi) of the
// flat buffer; duplicates of tensor-parallel replicated parameters skipped off tp rank 0), and
// whether they are all finite.
double local_grad_sum_squares(const ParamAndGradBuffer& buf, int64_t lo, int64_t hi, const GradNormGroups& g);

// From the global sum of squares of the (scaled) grads: fills st.grad_norm (unscaled) and
// returns the AdamW hyper-parameters of step `step`, with 1/loss_scale and the --clip-grad
// coefficient folded into grad_scale. Shared by AdamWOptimizer and DistributedOptimizer.
AdamWParams adamw_step_params(const OptimizerConfig& cfg, double lr, int64_t step, double inv_scale,
                              double sum_squares, StepStats& st);

class AdamWOptimizer : public MegatronOptimizer {
 public:
  AdamWOptimizer(ParamAndGradBuffer& buf, const OptimizerConfig& cfg, const GradNormGroups& groups = {});
  GradStats grad_stats(double loss_scale) override;
  StepStats apply(double lr, double loss_scale, const GradStats& global) override;
  int64_t state_bytes() const override;

  int64_t steps_taken() const override { return step_; }
  void set_steps_taken(int64_t steps) override { step_ = steps; }
  std::vector<OptimizerStateRange> state_ranges() const override;
  void reset_master_from_params() override;
  bool has_master_copy() const override { return has_master_copy_; }
  int64_t count_zeros_in_grads() override;
  void set_dp_replica(int dp_rank) { dp_replica_ = dp_rank; }  // checkpointing: copies on other DP ranks
  const Tensor& master() const { return master_; }     // fp32 flat (aliases the params for fp32)
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }

 private:
  ParamAndGradBuffer& buf_;
  OptimizerConfig cfg_;
  GradNormGroups groups_;
  Tensor master_, m_, v_;
  bool has_master_copy_;
  int64_t step_ = 0;
  int dp_replica_ = 0;
};

}  // namespace mt
