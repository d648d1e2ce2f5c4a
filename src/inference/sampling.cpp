#include "inference/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/argmax.h"
#include "kernels/elementwise.h"

namespace mt {
namespace {

constexpr uint64_t kSamplingStream = rng_stream("generate/sampling");

}  // namespace

int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, float u) {
  if (p.greedy()) return int32_t(std::max_element(logits, logits + vocab) - logits);  // first maximum
  // Candidates by decreasing logit, ties by increasing id (a stable order, so draws repeat).
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t keep = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    keep = p.top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_logit);
  } else {
    std::sort(ids.begin(), ids.end(), by_logit);
  }
  // Softmax of logits / temperature over the candidates, in double.
  std::vector<double> prob(static_cast<size_t>(keep));
  const double top = double(logits[ids[0]]) / p.temperature;
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    prob[size_t(i)] = std::exp(double(logits[ids[size_t(i)]]) / p.temperature - top);
    total += prob[size_t(i)];
  }
  if (p.top_p < 1.0f) {  // the smallest prefix whose probability reaches top_p (at least one token)
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += prob[size_t(n++)] / total;
      if (cum >= double(p.top_p)) break;
    }
    keep = n;
    total = std::accumulate(prob.begin(), prob.begin() + keep, 0.0);
  }
  // Inverse CDF: the first candidate whose cumulative probability reaches u.
  const double target = double(u) * total;
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += prob[size_t(i)];
    if (cum >= target) return ids[size_t(i)];
  }
  return ids[size_t(keep - 1)];
}

std::vector<int32_t> sample_next_tokens(const Tensor& logits, int64_t vocab, const SamplingParams& p, int64_t step) {
  MT_CHECK(logits.dim() == 2 && vocab > 0 && vocab <= logits.size(1), "sample_next_tokens: logits {} vocab {}",
           logits.str(), vocab);
  const int64_t B = logits.size(0), V = logits.size(1);
  std::vector<int32_t> next(static_cast<size_t>(B));
  if (p.greedy()) {  // on the logits' device: only B ids cross to the host
    Tensor ids = Tensor::empty({B}, DType::I32, logits.device());
    argmax_rows(logits, vocab, ids);
    Tensor host = ids.to(Device::cpu());
    std::copy_n(host.data<int32_t>(), B, next.begin());
    return next;
  }
  Tensor f32 = logits;
  if (logits.dtype() != DType::F32) {
    f32 = Tensor::empty(logits.shape(), DType::F32, logits.device());
    cast(logits, f32);
  }
  if (f32.is_cuda()) f32 = f32.to(Device::cpu());
  for (int64_t b = 0; b < B; ++b)
    next[size_t(b)] = sample_token(f32.data<float>() + b * V, vocab, p,
                                   philox_uniform(p.seed, kSamplingStream + uint64_t(b), uint64_t(step)));
  return next;
}

}  // namespace mt
