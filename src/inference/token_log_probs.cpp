#include "inference/token_log_probs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"

namespace mt {

std::vector<float> token_log_probs(const Tensor& logits, int64_t vocab, const std::vector<int32_t>& ids) {
  MT_CHECK(logits.dim() == 2 && int64_t(ids.size()) == logits.size(0) && vocab <= logits.size(1),
           "token_log_probs: logits {}, {} ids, vocab {}", logits.str(), ids.size(), vocab);
  const int64_t B = logits.size(0);
  Tensor targets = Tensor::empty({B}, DType::I32);
  std::copy(ids.begin(), ids.end(), targets.data<int32_t>());
  targets = targets.to(logits.device());
  Tensor losses = Tensor::empty({B}, DType::F32, logits.device());
  cross_entropy_forward_backward(logits, targets, vocab, losses, nullptr, nullptr);
  const Tensor host = losses.to(Device::cpu());
  std::vector<float> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) out[size_t(b)] = -host.data<float>()[b];
  return out;
}

std::vector<std::vector<TokenLogProb>> top_token_log_probs(const Tensor& logits, int64_t vocab, int64_t k) {
  MT_CHECK(logits.dim() == 2 && vocab <= logits.size(1) && k > 0, "top_token_log_probs: logits {}, vocab {}, k {}",
           logits.str(), vocab, k);
  Tensor f32 = logits;
  if (logits.dtype() != DType::F32) {
    f32 = Tensor::empty(logits.shape(), DType::F32, logits.device());
    cast(logits, f32);
  }
  if (f32.is_cuda()) f32 = f32.to(Device::cpu());
  const int64_t B = logits.size(0), V = logits.size(1), keep = std::min(k, vocab);
  std::vector<std::vector<TokenLogProb>> out(static_cast<size_t>(B));
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int64_t b = 0; b < B; ++b) {
    const float* row = f32.data<float>() + b * V;
    // log softmax = x - (max + log sum exp(x - max)).
    const double top = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - top);
    const double log_z = top + std::log(sum);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(),
                      [&](int32_t a, int32_t c) { return row[a] > row[c] || (row[a] == row[c] && a < c); });
    for (int64_t i = 0; i < keep; ++i)
      out[size_t(b)].push_back({ids[size_t(i)], float(double(row[ids[size_t(i)]]) - log_z)});
  }
  return out;
}

}  // namespace mt
