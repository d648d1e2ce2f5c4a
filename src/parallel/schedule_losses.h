#pragma once
// The loss bookkeeping every schedule shares: each token's weight in the objective (the loss
// gradient fed to the fused loss) and a microbatch's mean loss.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "parallel/schedules.h"

namespace mt {

// Sum and count of the losses [N] (masked where a mask is given), summed in double in token order.
inline void loss_sum_count(const float* losses, const float* mask, int64_t n, double& sum, double& count) {
  double s = 0, c = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += mask ? double(losses[i]) * mask[i] : double(losses[i]);
    c += mask ? mask[i] : 1.0;
  }
  sum = s, count = c;
}

// Each microbatch's mean loss from its per-token losses (on any device) and host masks: the
// masked mean over all its tokens, on every rank of cfg.context_parallel.
inline std::vector<double> microbatch_means(const std::vector<Tensor>& losses, const std::vector<Tensor>& masks,
                                            const ScheduleConfig& cfg) {
  const size_t M = losses.size();
  std::vector<double> sums(2 * M, 0.0);
  for (size_t m = 0; m < M; ++m) {
    if (!losses[m].defined()) continue;
    const Tensor host = losses[m].is_cuda() ? losses[m].to(Device::cpu()) : losses[m];
    loss_sum_count(host.data<float>(), masks[m].defined() ? masks[m].data<float>() : nullptr, host.numel(), sums[2 * m],
                   sums[2 * m + 1]);
  }
  if (cfg.context_parallel && cfg.context_parallel->size() > 1)
    cfg.context_parallel->all_reduce_f64(sums.data(), int(sums.size()));
  std::vector<double> means(M, 0.0);
  for (size_t m = 0; m < M; ++m)
    if (losses[m].defined())
      means[m] = masks[m].defined() ? sums[2 * m] / std::max(sums[2 * m + 1], 1.0) : sums[2 * m] / sums[2 * m + 1];
  return means;
}

// Each token's weight in the objective: scale / tokens / (M DP), or mask * scale / (M DP) / sum(mask).
inline void fill_dloss(const Tensor& mask, int64_t n, const ScheduleConfig& cfg, Tensor& dloss) {
  const double share = double(cfg.num_microbatches * cfg.data_parallel_size);
  Communicator* cp = cfg.context_parallel && cfg.context_parallel->size() > 1 ? cfg.context_parallel : nullptr;
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
    fill(dloss, float(cfg.loss_scale / (double(n) * (cp ? cp->size() : 1)) / share));
    return;
  }
  MT_CHECK(!mask.is_cuda() && mask.dtype() == DType::F32 && mask.numel() == n,
           "the loss mask is fp32 on the host with one value per token, got {}", mask.str());
  const double weight = cfg.loss_scale / share;
  const float* k = mask.data<float>();
  double count = 0;
  for (int64_t i = 0; i < n; ++i) count += k[i];
  if (cp) count = cp->all_reduce_scalar(count);  // the microbatch's loss tokens on every rank
  count = std::max(count, 1.0);
  Tensor g = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) g.data<float>()[i] = float(k[i] * weight / count);
  dloss.copy_from(g);
}

}  // namespace mt
