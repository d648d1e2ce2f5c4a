#pragma once
// Loss scaling for fp16 (Megatron's ConstantGradScaler / DynamicGradScaler). The loss is
// multiplied by scale() before backward; grads are divided by it before the update. An
// iteration whose grads overflow is skipped; the dynamic scaler backs off after `hysteresis`
// overflows and grows after `growth_interval` (--loss-scale-window) clean iterations.
#include <cstdint>

namespace mt {

struct GradScalerConfig {
  bool dynamic = true;
  double initial_scale = 4294967296.0;  // 2^32, --initial-loss-scale
  double min_scale = 1.0;               // --min-loss-scale
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 1000;       // --loss-scale-window
  int64_t hysteresis = 2;               // --hysteresis
};

class GradScaler {
 public:
  explicit GradScaler(const GradScalerConfig& cfg);
  double scale() const { return scale_; }
  void update(bool found_inf);
  // Checkpointing: the dynamic state.
  int64_t growth_tracker() const { return growth_tracker_; }
  int64_t hysteresis_tracker() const { return hysteresis_tracker_; }
  void set_state(double scale, int64_t growth_tracker, int64_t hysteresis_tracker) {
    scale_ = scale;
    growth_tracker_ = growth_tracker;
    hysteresis_tracker_ = hysteresis_tracker;
  }

 private:
  GradScalerConfig cfg_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t hysteresis_tracker_;
};

}  // namespace mt
