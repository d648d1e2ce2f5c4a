#include "optim/grad_scaler.h"

#include <algorithm>

namespace mt {

GradScaler::GradScaler(const GradScalerConfig& cfg)
    : cfg_(cfg), scale_(cfg.initial_scale), hysteresis_tracker_(cfg.hysteresis) {}

void GradScaler::update(bool found_inf) {
  if (!cfg_.dynamic) return;
  if (found_inf) {
    growth_tracker_ = 0;
    if (--hysteresis_tracker_ <= 0) scale_ = std::max(scale_ * cfg_.backoff_factor, cfg_.min_scale);
    return;
  }
  if (++growth_tracker_ == cfg_.growth_interval) {
    growth_tracker_ = 0;
    hysteresis_tracker_ = cfg_.hysteresis;
    scale_ *= cfg_.growth_factor;
  }
}

}  // namespace mt
