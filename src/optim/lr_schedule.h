#pragma once
// OptimizerParamScheduler (Megatron's name): linear warmup to --lr over --lr-warmup-iters, then
// decay to --min-lr by --lr-decay-iters with --lr-decay-style constant | linear | cosine |
// inverse-square-root; --min-lr after that.
#include <cstdint>
#include <string>

namespace mt {

enum class LrDecayStyle { Constant, Linear, Cosine, InverseSquareRoot };
// Returns false for an unknown name.
bool parse_lr_decay_style(const std::string& s, LrDecayStyle& out);

struct LrScheduleConfig {
  double max_lr = 3e-4;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t decay_steps = 0;  // iterations after which the LR stays at min_lr
  LrDecayStyle style = LrDecayStyle::Linear;
  double warmup_init_lr = 0.0;  // the linear warmup starts here (Megatron's --lr-warmup-init)
};

class OptimizerParamScheduler {
 public:
  explicit OptimizerParamScheduler(const LrScheduleConfig& cfg) : cfg_(cfg) {}
  // The learning rate of 1-based iteration `step`.
  double lr(int64_t step) const;
  const LrScheduleConfig& config() const { return cfg_; }

 private:
  LrScheduleConfig cfg_;
};

}  // namespace mt
