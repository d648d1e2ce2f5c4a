// Fused softmax + cross-entropy on the CPU, rows in parallel.
//   pass 1: online max m and sum s = sum_v exp(x_v - m) over v < vocab, in chunks of kChunk
//           logits (chunk max, rescale s when m grows, add the chunk's exps); lse = m + log s;
//           loss = lse - x[target]
//   pass 2 (with dlogits): dlogits[v] = dloss * (exp(x_v - lse) - [v == target]) for v < vocab,
//           0 for the padding columns v >= vocab.
// Reads each logit once per pass (twice with the gradient) and writes each gradient once; a
// chunk is widened to fp32 in a stack buffer and exponentiated four lanes at a time. Pass 2
// reads a chunk before writing the gradient over it, so dlogits may alias logits. fp32 rows on
// the AVX-512 or AVX2 path go through cross_entropy_avx512.h / cross_entropy_avx2.h instead (the
// same math in 16 or 8 lanes, two-pass max then sum; AVX-512 was 4.4x faster at 1024 x 4096).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/error.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/load_store.h"
#if defined(__x86_64__)
#include "kernels/cpu/cross_entropy_avx2.h"
#include "kernels/cpu/cross_entropy_avx512.h"
#include "kernels/cpu_isa.h"
#endif

namespace mt::cpu {
namespace {

constexpr int64_t kChunk = 512;

template <class T>
void xent_t(const T* logits, const int32_t* targets, int64_t N, int64_t Vp, int64_t vocab, float* losses,
            const float* dloss, T* dlogits) {
#if defined(__x86_64__)
  const CpuIsa isa = cpu_isa();
  const auto row = isa == CpuIsa::kAvx512 ? &avx512::xent_row : &avx2::xent_row;
#endif
#pragma omp parallel
  {
    float buf[kChunk];
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const T* x = logits + n * Vp;
      const int64_t target = targets[n];
      MT_CHECK(target >= 0 && target < vocab, "cross_entropy: target {} of row {} outside [0, {})", target, n, vocab);
#if defined(__x86_64__)
      if constexpr (std::is_same_v<T, float>) {
        if (isa != CpuIsa::kPortable) {  // fp32 rows in 16 or 8 lanes
          T* g = dlogits ? dlogits + n * Vp : nullptr;
          const float x_target = x[target];  // before g, which may be x, overwrites it
          losses[n] = row(x, vocab, target, dlogits ? dloss[n] : 0.0f, g) - x_target;
          if (g)
            for (int64_t v = vocab; v < Vp; ++v) g[v] = 0.0f;
          continue;
        }
      }
#endif
      float m = std::numeric_limits<float>::lowest(), s = 0.0f;  // not -inf: a -inf logit adds exp(-inf) = 0
      for (int64_t v0 = 0; v0 < vocab; v0 += kChunk) {
        const int64_t len = std::min(kChunk, vocab - v0);
        load_row(x + v0, buf, len);
        const float chunk_max = max_of(buf, len, m);
        s = s * std::exp(m - chunk_max) + exp_shifted_sum(buf, len, chunk_max);
        m = chunk_max;
      }
      const float lse = m + std::log(s);
      losses[n] = lse - to_f32(x[target]);
      if (!dlogits) continue;
      const float w = dloss[n];
      T* g = dlogits + n * Vp;
      for (int64_t v0 = 0; v0 < vocab; v0 += kChunk) {
        const int64_t len = std::min(kChunk, vocab - v0);
        load_row(x + v0, buf, len);
        exp_shifted_sum(buf, len, lse);  // softmax
        for (int64_t j = 0; j < len; ++j) buf[j] *= w;
        if (target >= v0 && target < v0 + len) buf[target - v0] -= w;
        store_row(buf, g + v0, len);
      }
      for (int64_t v = vocab; v < Vp; ++v) g[v] = from_f32<T>(0.0f);
    }
  }
}

}  // namespace

void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab, const Tensor& losses,
                                    const Tensor* dloss, const Tensor* dlogits) {
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    xent_t(logits.data<T>(), targets.data<int32_t>(), logits.size(0), logits.size(1), vocab, losses.data<float>(),
           dloss ? dloss->data<float>() : nullptr, dlogits ? dlogits->data<T>() : nullptr);
  });
}

}  // namespace mt::cpu
