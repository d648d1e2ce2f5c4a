#include "inference/scoring.h"

#include <algorithm>

#include "core/error.h"

namespace mt {

std::vector<std::vector<float>> score_prompts(const GPTModel& model, const std::vector<std::vector<int32_t>>& prompts) {
  const size_t B = prompts.size();
  size_t T = 0;
  for (const auto& p : prompts) T = std::max(T, p.size());
  std::vector<std::vector<float>> out(B);
  if (T < 2) return out;  // nothing to predict
  // tokens[b, t] = prompt[t]; targets[b, t] = prompt[t + 1]; id 0 where the row has none.
  Tensor tokens = Tensor::zeros({int64_t(B), int64_t(T)}, DType::I32);
  Tensor targets = Tensor::zeros({int64_t(B), int64_t(T)}, DType::I32);
  for (size_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    std::copy(p.begin(), p.end(), tokens.data<int32_t>() + b * T);
    if (p.size() > 1) std::copy(p.begin() + 1, p.end(), targets.data<int32_t>() + b * T);
  }
  const Device device = model.buffer().param(0).device();
  GPTModel::Saved saved;
  ForwardContext ctx;
  ctx.training = false;
  const Tensor losses = model.forward_loss(tokens.to(device), targets.to(device), ctx, nullptr, saved).to(Device::cpu());
  for (size_t b = 0; b < B; ++b)
    for (size_t t = 0; t + 1 < prompts[b].size(); ++t) out[b].push_back(-losses.data<float>()[b * T + t]);
  return out;
}

}  // namespace mt
