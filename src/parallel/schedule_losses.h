#pragma once
// The loss bookkeeping every schedule shares: each token's weight in the objective (the loss
// gradient fed to the fused loss) and a microbatch's mean loss.
#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "parallel/schedules.h"

namespace mt {

// Mean of the losses [N] (masked mean with a mask), summed in double in token order.
inline double mean_loss(const float* losses, const float* mask, int64_t n) {
  double s = 0, count = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += mask ? double(losses[i]) * mask[i] : double(losses[i]);
    count += mask ? mask[i] : 1.0;
  }
  return mask ? s / std::max(count, 1.0) : s / double(n);
}

// Each token's weight in the objective: scale / tokens / (M DP), or mask * scale / (M DP) / sum(mask).
inline void fill_dloss(const Tensor& mask, int64_t n, const ScheduleConfig& cfg, Tensor& dloss) {
  const double share = double(cfg.num_microbatches * cfg.data_parallel_size);
  if (cfg.loss_tokens > 0) {  // per-token loss: every loss token of the global batch weighs the same
    if (!mask.defined()) {
      fill(dloss, float(cfg.loss_scale / cfg.loss_tokens));
      return;
    }
    Tensor g = Tensor::empty({n}, DType::F32);
    for (int64_t i = 0; i < n; ++i) g.data<float>()[i] = float(mask.data<float>()[i] * cfg.loss_scale / cfg.loss_tokens);
    dloss.copy_from(g);
    return;
  }
  if (!mask.defined()) {
    fill(dloss, float(cfg.loss_scale / double(n) / share));
    return;
  }
  MT_CHECK(!mask.is_cuda() && mask.dtype() == DType::F32 && mask.numel() == n,
           "the loss mask is fp32 on the host with one value per token, got {}", mask.str());
  const double weight = cfg.loss_scale / share;
  const float* k = mask.data<float>();
  double count = 0;
  for (int64_t i = 0; i < n; ++i) count += k[i];
  count = std::max(count, 1.0);
  Tensor g = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) g.data<float>()[i] = float(k[i] * weight / count);
  dloss.copy_from(g);
}

}  // namespace mt
