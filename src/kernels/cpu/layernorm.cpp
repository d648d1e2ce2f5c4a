// LayerNorm over the last dimension C of x [N, C]:
//   forward:  mean = sum x / C, rstd = 1/sqrt(sum (x - mean)^2 / C + eps), y = (x - mean) rstd w + b
//   backward: n = (x - mean) rstd, g = dy w,
//             dx = rstd (g - mean(g) - n mean(g n)),  dw += sum_rows dy n,  db += sum_rows dy
// Rows are independent and run in parallel; a row (C elements) stays in cache across its passes,
// so forward reads x once and writes y. Backward first reduces dw, db with threads owning blocks
// of columns and walking rows in order (deterministic; one read of dy and x), then writes dx with
// threads owning rows (a second read of dy and x). dw/db come first so dx may alias dy.
// add_layernorm_forward / layernorm_backward_add: the reference is the unfused sequence
// layernorm.h defines them by (the CPU model computes exactly what it did with separate ops).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

template <class T>
void forward_t(const T* x, const float* w, const float* b, float eps, T* y, float* mean, float* rstd, int64_t N,
               int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * C;
    float sum = 0.0f;
    for (int64_t c = 0; c < C; ++c) sum += to_f32(xr[c]);
    const float mu = sum / float(C);
    float var = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float d = to_f32(xr[c]) - mu;
      var += d * d;
    }
    const float rs = 1.0f / std::sqrt(var / float(C) + eps);
    T* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = from_f32<T>((to_f32(xr[c]) - mu) * rs * w[c] + b[c]);
    mean[r] = mu;
    rstd[r] = rs;
  }
}

template <class T>
void backward_t(const T* dy, const T* x, const float* w, const float* mean, const float* rstd, T* dx, float* dw,
                float* db, int64_t N, int64_t C) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, width = std::min(kCols, C - c0);
    float dw_acc[kCols] = {}, db_acc[kCols] = {};
    for (int64_t r = 0; r < N; ++r) {
      const T* xr = x + r * C + c0;
      const T* dyr = dy + r * C + c0;
      for (int64_t j = 0; j < width; ++j) {
        const float g = to_f32(dyr[j]);
        dw_acc[j] += g * (to_f32(xr[j]) - mean[r]) * rstd[r];
        db_acc[j] += g;
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      dw[c0 + j] += dw_acc[j];
      db[c0 + j] += db_acc[j];
    }
  }

#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    const float mu = mean[r], rs = rstd[r];
    float g_mean = 0.0f, gn_mean = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float g = to_f32(dyr[c]) * w[c];
      g_mean += g;
      gn_mean += g * (to_f32(xr[c]) - mu) * rs;
    }
    g_mean /= float(C);
    gn_mean /= float(C);
    T* dxr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float g = to_f32(dyr[c]) * w[c], n = (to_f32(xr[c]) - mu) * rs;
      dxr[c] = from_f32<T>(rs * (g - g_mean - n * gn_mean));
    }
  }
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const std::vector<float> wf = to_f32_vector(&w), bf = to_f32_vector(&b);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_t(x.data<T>(), wf.data(), bf.data(), eps, y.data<T>(), mean.data<float>(), rstd.data<float>(), N, C);
  });
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const std::vector<float> wf = to_f32_vector(&w);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_t(dy.data<T>(), x.data<T>(), wf.data(), mean.data<float>(), rstd.data<float>(), dx.data<T>(),
               dw_accum.data<float>(), db_accum.data<float>(), N, C);
  });
}

void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  add(x, r, sum);
  layernorm_forward(sum, w, b, eps, y, mean, rstd);
}

void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                            const Tensor& dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum) {
  layernorm_backward(dy, x, w, mean, rstd, dx, dw_accum, db_accum);
  add(dx, dres, dx);
}

}  // namespace mt::cpu
