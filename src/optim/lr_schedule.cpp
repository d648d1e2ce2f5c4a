#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace mt {

bool parse_lr_decay_style(const std::string& s, LrDecayStyle& out) {
  if (s == "constant") out = LrDecayStyle::Constant;
  else if (s == "linear") out = LrDecayStyle::Linear;
  else if (s == "cosine") out = LrDecayStyle::Cosine;
  else if (s == "inverse-square-root") out = LrDecayStyle::InverseSquareRoot;
  else return false;
  return true;
}

double OptimizerParamScheduler::lr(int64_t step) const {
  const auto& c = cfg_;
  if (c.warmup_steps > 0 && step <= c.warmup_steps)
    return c.warmup_init_lr + (c.max_lr - c.warmup_init_lr) * double(step) / double(c.warmup_steps);
  if (c.style == LrDecayStyle::Constant) return c.max_lr;
  if (c.style == LrDecayStyle::InverseSquareRoot) {
    double w = double(std::max<int64_t>(c.warmup_steps, 1));
    return std::max(c.min_lr, c.max_lr * std::sqrt(w) / std::sqrt(double(std::max<int64_t>(step, 1))));
  }
  if (step > c.decay_steps) return c.min_lr;
  int64_t span = c.decay_steps - c.warmup_steps;
  if (span <= 0) return c.min_lr;
  double ratio = double(step - c.warmup_steps) / double(span);
  double coeff = c.style == LrDecayStyle::Linear ? 1.0 - ratio : 0.5 * (std::cos(M_PI * ratio) + 1.0);
  return c.min_lr + coeff * (c.max_lr - c.min_lr);
}

}  // namespace mt
