// The key/value cache on the CPU (kv_cache.h): the append is a copy of each new token's key and
// value heads into its slot; attention is the reference computation, one (token, query head)
// per loop iteration: scores s_j = scale q . k_j over the cached prefix j <= start + t, then
// out = sum_j e^(s_j - max) v_j / sum_j e^(s_j - max), all in fp32 and in key order, so the result
// does not depend on the thread count.
#include "kernels/cpu/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

template <class T>
void append_t(const T* qkv, const int32_t* start, T* kc, T* vc, int64_t B, int64_t Tn, int64_t G, int64_t S,
              int64_t D, int64_t slots) {
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * Tn; ++bt) {
    const int64_t b = bt / Tn, t = bt % Tn, slot = int64_t(start[b]) + t;
    for (int64_t g = 0; g < G; ++g) {
      const T* k = qkv + ((bt * G + g) * S + (S - 2)) * D;
      T* kd = kc + ((b * slots + slot) * G + g) * D;
      T* vd = vc + ((b * slots + slot) * G + g) * D;
      std::copy(k, k + D, kd);
      std::copy(k + D, k + 2 * D, vd);  // the value head follows the key head
    }
  }
}

template <class T>
void attention_t(const T* qkv, const T* kc, const T* vc, const int32_t* start, T* out, int64_t B, int64_t Tn,
                 int64_t H, int64_t G, int64_t D, int64_t slots, float scale) {
  const int64_t per_group = H / G, S = per_group + 2;
#pragma omp parallel
  {
    std::vector<float> q(static_cast<size_t>(D)), acc(static_cast<size_t>(D)), p;
#pragma omp for schedule(static)
    for (int64_t bth = 0; bth < B * Tn * H; ++bth) {
      const int64_t h = bth % H, bt = bth / H, b = bt / Tn, t = bt % Tn;
      const int64_t g = h / per_group, keys = int64_t(start[b]) + t + 1;
      load_row(qkv + ((bt * G + g) * S + h % per_group) * D, q.data(), D);
      p.resize(size_t(keys));
      float m = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        const T* k = kc + ((b * slots + j) * G + g) * D;
        float dot = 0.0f;
        for (int64_t d = 0; d < D; ++d) dot += q[size_t(d)] * to_f32(k[d]);
        p[size_t(j)] = dot * scale;
        m = std::max(m, p[size_t(j)]);
      }
      float l = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < keys; ++j) {
        const float e = std::exp(p[size_t(j)] - m);
        l += e;
        const T* v = vc + ((b * slots + j) * G + g) * D;
        for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += e * to_f32(v[d]);
      }
      T* o = out + (bt * H + h) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = from_f32<T>(acc[size_t(d)] / l);
    }
  }
}

}  // namespace

void kv_cache_append(const Tensor& qkv, const Tensor& start, const Tensor& k_cache, const Tensor& v_cache) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    append_t(qkv.data<T>(), start.data<int32_t>(), k_cache.data<T>(), v_cache.data<T>(), qkv.size(0), qkv.size(1),
             qkv.size(2), qkv.size(3), qkv.size(4), k_cache.size(1));
  });
}

void kv_cache_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                        const Tensor& out, const AttentionConfig& cfg) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    attention_t(qkv.data<T>(), k_cache.data<T>(), v_cache.data<T>(), start.data<int32_t>(), out.data<T>(),
                qkv.size(0), qkv.size(1), cfg.n_heads, cfg.groups(), cfg.head_dim, k_cache.size(1), cfg.scale());
  });
}

}  // namespace mt::cpu
