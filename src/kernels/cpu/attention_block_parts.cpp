// The small ops around the attention block kernel (attention_block.h) on the CPU: merging a
// block's partial result by log-sum-exp, splitting K, V out of qkv, and packing the fp32
// gradients back into qkv's layout. Each reads and writes every element once (memory-bound);
// OpenMP over independent rows, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {

// Per row (b, i, h): with a = lse_acc, c = lse_blk, lse' = max + log(e^(a - max) + e^(c - max))
// (log1p of the smaller term, exact for equal ones), and out_acc = e^(a - lse') out_acc +
// e^(c - lse') out_blk. A -inf block row changes nothing; a -inf accumulator row takes the block's.
void attention_lse_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_blk, const Tensor& lse_blk) {
  const int64_t B = out_acc.size(0), Tq = out_acc.size(1), H = out_acc.size(2), D = out_acc.size(3);
  float *o = out_acc.data<float>(), *la = lse_acc.data<float>();
  const float *ob = out_blk.data<float>(), *lb = lse_blk.data<float>();
  constexpr float kInf = std::numeric_limits<float>::infinity();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < B * Tq * H; ++row) {
    const int64_t h = row % H, bt = row / H, b = bt / Tq, i = bt % Tq;
    const int64_t at = (b * H + h) * Tq + i;
    const float a = la[at], c = lb[at];
    if (c == -kInf) continue;
    float* orow = o + row * D;
    const float* brow = ob + row * D;
    if (a == -kInf) {
      for (int64_t k = 0; k < D; ++k) orow[k] = brow[k];
      la[at] = c;
      continue;
    }
    const float mx = std::max(a, c), merged = mx + std::log1p(std::exp(-std::abs(a - c)));
    const float wa = std::exp(a - merged), wc = std::exp(c - merged);
    for (int64_t k = 0; k < D; ++k) orow[k] = wa * orow[k] + wc * brow[k];
    la[at] = merged;
  }
}

void attention_split_kv(const Tensor& qkv, const Tensor& kv) {
  const int64_t BT = qkv.size(0) * qkv.size(1), G = qkv.size(2), slots = qkv.size(3), D = qkv.size(4);
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = qkv.data<T>();
    T* dst = kv.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t bt = 0; bt < BT; ++bt)
      for (int64_t g = 0; g < G; ++g) {
        const T* from = src + ((bt * G + g) * slots + slots - 2) * D;  // the group's k, then v: 2 D in a row
        T* to = dst + (bt * G + g) * 2 * D;
        for (int64_t k = 0; k < 2 * D; ++k) to[k] = from[k];
      }
  });
}

void attention_pack_grads(const Tensor& dq, const Tensor& dkv, const Tensor& dqkv) {
  const int64_t BT = dqkv.size(0) * dqkv.size(1), G = dqkv.size(2), slots = dqkv.size(3), D = dqkv.size(4);
  const int64_t hpg = slots - 2;
  dispatch_float(dqkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const float *q = dq.data<float>(), *kv = dkv.data<float>();
    T* dst = dqkv.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t bt = 0; bt < BT; ++bt)
      for (int64_t g = 0; g < G; ++g) {
        T* to = dst + (bt * G + g) * slots * D;
        store_row(q + (bt * G + g) * hpg * D, to, hpg * D);        // query heads g hpg .. g hpg + hpg - 1
        store_row(kv + (bt * G + g) * 2 * D, to + hpg * D, 2 * D);  // key, value
      }
  });
}

}  // namespace mt::cpu
