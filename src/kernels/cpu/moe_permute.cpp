// MoE token permutation on the CPU (kernels/moe_permute.h): gathers and scatters of rows, fp32
// sums over a token's choices in slot order. Each output row is written by one thread, so the
// results do not depend on the thread count.
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {

void moe_permute(const Tensor& x, const Tensor& row_source, int topk, const Tensor& out) {
  const int64_t R = out.size(0), C = out.size(1);
  const int32_t* src = row_source.data<int32_t>();
  const size_t bytes = size_t(C) * dtype_size(x.dtype());
  const char* xp = static_cast<const char*>(x.raw());
  char* op = static_cast<char*>(out.raw());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    if (src[r] < 0)
      std::memset(op + r * bytes, 0, bytes);
    else
      std::memcpy(op + r * bytes, xp + (src[r] / topk) * bytes, bytes);
  }
}

namespace {

// out[t] = sum_s w[t k + s] src[map[t k + s]] over mapped slots (w null: weights 1), fp32 sums.
void gather_sum(const Tensor& src, const int32_t* map, const float* w, int topk, const Tensor& out) {
  const int64_t N = out.size(0), C = out.size(1);
  dispatch_float(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* sp = src.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < N; ++t) {
      std::vector<float> acc(static_cast<size_t>(C), 0.0f);
      for (int s = 0; s < topk; ++s) {
        const int32_t r = map[t * topk + s];
        if (r < 0) continue;
        const float weight = w ? w[t * topk + s] : 1.0f;
        for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += weight * to_f32(sp[r * C + c]);
      }
      for (int64_t c = 0; c < C; ++c) o[t * C + c] = from_f32<T>(acc[size_t(c)]);
    }
  });
}

}  // namespace

void moe_permute_backward(const Tensor& dout, const Tensor& row_map, int topk, const Tensor& dx) {
  gather_sum(dout, row_map.data<int32_t>(), nullptr, topk, dx);
}

void moe_unpermute(const Tensor& y, const Tensor& row_map, const Tensor& probs, const Tensor& out) {
  gather_sum(y, row_map.data<int32_t>(), probs.data<float>(), int(probs.size(1)), out);
}

void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& row_map, const Tensor& row_source,
                            const Tensor& probs, const Tensor& dy, const Tensor& dprobs) {
  const int64_t N = dout.size(0), C = dout.size(1), R = dy.size(0);
  const int topk = int(probs.size(1));
  const int32_t* map = row_map.data<int32_t>();
  const int32_t* src = row_source.data<int32_t>();
  const float* p = probs.data<float>();
  float* dp = dprobs.data<float>();
  dispatch_float(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* d = dout.data<T>();
    const T* yp = y.data<T>();
    T* g = dy.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const int32_t slot = src[r];
      if (slot < 0) {
        for (int64_t c = 0; c < C; ++c) g[r * C + c] = from_f32<T>(0.0f);
        continue;
      }
      const float w = p[slot];
      const T* drow = d + (slot / topk) * C;
      for (int64_t c = 0; c < C; ++c) g[r * C + c] = from_f32<T>(w * to_f32(drow[c]));
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * topk; ++i) {
      const int32_t r = map[i];
      float acc = 0.0f;
      if (r >= 0) {
        const T* drow = d + (i / topk) * C;
        for (int64_t c = 0; c < C; ++c) acc += to_f32(drow[c]) * to_f32(yp[r * C + c]);
      }
      dp[i] = acc;
    }
  });
}

}  // namespace mt::cpu
