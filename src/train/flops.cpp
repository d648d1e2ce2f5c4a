#include "train/flops.h"

namespace mt {

double flops_per_token(const GPTConfig& cfg, int64_t n) {
  return 6.0 * double(n) + 12.0 * cfg.num_layers * double(cfg.hidden_size) * cfg.seq_length;
}

}  // namespace mt
