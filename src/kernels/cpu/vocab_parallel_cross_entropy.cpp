// Vocabulary-parallel cross-entropy on the CPU: rows in parallel, each row's logits widened to
// fp32 chunk by chunk (as the fused kernel does), exps four lanes at a time.
#include "kernels/cpu/vocab_parallel_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

constexpr int64_t kChunk = 512;

int64_t valid_columns(int64_t Vl, int64_t vocab_start, int64_t vocab) {
  return std::clamp<int64_t>(vocab - vocab_start, 0, Vl);
}

}  // namespace

void vocab_parallel_ce_max(const Tensor& logits, int64_t vocab_start, int64_t vocab, const Tensor& row_max) {
  const int64_t N = logits.size(0), Vl = logits.size(1), nv = valid_columns(Vl, vocab_start, vocab);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.data<T>();
    float* mx = row_max.data<float>();
#pragma omp parallel
    {
      float buf[kChunk];
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        float m = std::numeric_limits<float>::lowest();
        for (int64_t v0 = 0; v0 < nv; v0 += kChunk) {
          const int64_t len = std::min(kChunk, nv - v0);
          load_row(x + n * Vl + v0, buf, len);
          m = max_of(buf, len, m);
        }
        mx[n] = m;
      }
    }
  });
}

void vocab_parallel_ce_sum_exp(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                               const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit) {
  const int64_t N = logits.size(0), Vl = logits.size(1), nv = valid_columns(Vl, vocab_start, vocab);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.data<T>();
    const int32_t* tg = targets.data<int32_t>();
    const float* mx = row_max.data<float>();
    float* se = sum_exp.data<float>();
    float* tl = target_logit.data<float>();
#pragma omp parallel
    {
      float buf[kChunk];
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        MT_CHECK(tg[n] >= 0 && tg[n] < vocab, "vocab_parallel_ce: target {} of row {} outside [0, {})", tg[n], n,
                 vocab);
        float s = 0.0f;
        for (int64_t v0 = 0; v0 < nv; v0 += kChunk) {
          const int64_t len = std::min(kChunk, nv - v0);
          load_row(x + n * Vl + v0, buf, len);
          s += exp_shifted_sum(buf, len, mx[n]);
        }
        se[n] = s;
        const int64_t t = int64_t(tg[n]) - vocab_start;
        tl[n] = t >= 0 && t < nv ? to_f32(x[n * Vl + t]) : 0.0f;
      }
    }
  });
}

void vocab_parallel_ce_loss_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                                 const Tensor& losses, const Tensor* dloss, const Tensor* dlogits) {
  const int64_t N = logits.size(0), Vl = logits.size(1), nv = valid_columns(Vl, vocab_start, vocab);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.data<T>();
    const int32_t* tg = targets.data<int32_t>();
    const float* mx = row_max.data<float>();
    const float* se = sum_exp.data<float>();
    const float* tl = target_logit.data<float>();
    float* loss = losses.data<float>();
    const float* dl = dloss ? dloss->data<float>() : nullptr;
    T* g = dlogits ? dlogits->data<T>() : nullptr;
#pragma omp parallel
    {
      float buf[kChunk];
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        const float lse = mx[n] + std::log(se[n]);
        loss[n] = lse - tl[n];
        if (!g) continue;
        const float w = dl[n];
        const int64_t t = int64_t(tg[n]) - vocab_start;
        for (int64_t v0 = 0; v0 < nv; v0 += kChunk) {
          const int64_t len = std::min(kChunk, nv - v0);
          load_row(x + n * Vl + v0, buf, len);
          exp_shifted_sum(buf, len, lse);  // softmax
          for (int64_t j = 0; j < len; ++j) buf[j] *= w;
          if (t >= v0 && t < v0 + len) buf[t - v0] -= w;
          store_row(buf, g + n * Vl + v0, len);
        }
        for (int64_t v = nv; v < Vl; ++v) g[n * Vl + v] = from_f32<T>(0.0f);
      }
    }
  });
}

}  // namespace mt::cpu
