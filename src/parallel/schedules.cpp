#include "parallel/schedules.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/elementwise.h"

namespace mt {

namespace {

// Mean of the losses [N] (masked mean with a mask), summed in double in token order.
double mean_loss(const float* losses, const float* mask, int64_t n) {
  double s = 0, count = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += mask ? double(losses[i]) * mask[i] : double(losses[i]);
    count += mask ? mask[i] : 1.0;
  }
  return mask ? s / std::max(count, 1.0) : s / double(n);
}

// Each token's weight in the objective: scale / tokens / (M DP), or mask * scale / (M DP) / sum(mask).
void fill_dloss(const Tensor& mask, int64_t n, const ScheduleConfig& cfg, Tensor& dloss) {
  const double share = double(cfg.num_microbatches * cfg.data_parallel_size);
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

}  // namespace

std::vector<double> forward_backward_no_pipelining(const GPTModel& model, DistributedDataParallel* ddp,
                                      const MicrobatchSource& microbatch, const MicrobatchContext& context,
                                      const ScheduleConfig& cfg) {
  const int M = cfg.num_microbatches;
  std::vector<Tensor> losses(static_cast<size_t>(M)), masks(static_cast<size_t>(M));
  Tensor dloss;
  for (int m = 0; m < M; ++m) {
    Microbatch mb = microbatch(m);
    const int64_t n = mb.tokens.numel();
    GPTModel::Saved saved;
    if (cfg.forward_only) {
      losses[size_t(m)] = model.forward_loss(mb.tokens, mb.labels, context(m), nullptr, saved);
    } else {
      if (!dloss.defined() || dloss.numel() != n) dloss = Tensor::empty({n}, DType::F32, mb.tokens.device());
      // The fused loss needs dloss in the same pass: from the mask, known before the forward.
      fill_dloss(mb.loss_mask, n, cfg, dloss);
      if (ddp) ddp->set_last_microbatch(m == M - 1);
      losses[size_t(m)] = model.forward_loss(mb.tokens, mb.labels, context(m), &dloss, saved);
      model.backward(saved);
    }
    masks[size_t(m)] = mb.loss_mask;
  }
  // The losses, read after every microbatch is enqueued.
  std::vector<double> means;
  for (int m = 0; m < M; ++m) {
    const Tensor& l = losses[size_t(m)];
    const Tensor host = l.is_cuda() ? l.to(Device::cpu()) : l;
    const Tensor& k = masks[size_t(m)];
    means.push_back(mean_loss(host.data<float>(), k.defined() ? k.data<float>() : nullptr, host.numel()));
  }
  return means;
}

void finalize_model_grads(DistributedDataParallel& ddp, const GPTModel& model) {
  ddp.finish_grad_sync();
  model.finish_grad_sync();
}

}  // namespace mt
