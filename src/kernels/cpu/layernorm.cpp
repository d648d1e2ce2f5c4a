// LayerNorm over the last dimension C of x [N, C]:
//   forward:  mean = sum x / C, rstd = 1/sqrt(sum (x - mean)^2 / C + eps), y = (x - mean) rstd w + b
//   backward: n = (x - mean) rstd, g = dy w,
//             dx = rstd (g - mean(g) - n mean(g n)),  dw += sum_rows dy n,  db += sum_rows dy
// Rows are independent and run in parallel; a row (C elements) stays in cache across its passes,
// so forward reads x once and writes y. Backward first reduces dw, db with threads owning blocks
// of columns and walking rows in order (deterministic; one read of dy and x), then writes dx with
// threads owning rows (a second read of dy and x). dw/db come first so dx may alias dy.
// The row sums run in 8 partial sums (norm_rows.h: element c into lane c % 8) added in a fixed
// order: they vectorise (one running fp32 sum was a chain of dependent adds, ~4 cycles each) and
// still depend on C only.
// add_layernorm_forward / layernorm_backward_add: the residual add is done in the same pass over
// each row, with the rounding of the unfused sequence layernorm.h defines them by (sum is stored
// in x's dtype and LN reads the stored value; LN's dx is rounded before dres is added), so they
// give the same bits as the separate ops.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/norm_rows.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

// With res: sum = x + res (stored as T) is the row normalised; sum may alias x or res.
template <class T>
void forward_t(const T* x, const T* res, T* sum, const float* w, const float* b, float eps, T* y, float* mean,
               float* rstd, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = residual_row(x, res, sum, r, C);
    const float mu = lane_sum(C, [&](int64_t c) { return to_f32(xr[c]); }) / float(C);
    const float var = lane_sum(C, [&](int64_t c) {
      const float d = to_f32(xr[c]) - mu;
      return d * d;
    });
    const float rs = 1.0f / std::sqrt(var / float(C) + eps);
    T* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = from_f32<T>((to_f32(xr[c]) - mu) * rs * w[c] + b[c]);
    mean[r] = mu;
    rstd[r] = rs;
  }
}

// With dres: dx = (LN's dx, rounded to T) + dres.
template <class T>
void backward_t(const T* dy, const T* x, const float* w, const float* mean, const float* rstd, const T* dres, T* dx,
                float* dw, float* db, int64_t N, int64_t C) {
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
    const float g_mean = lane_sum(C, [&](int64_t c) { return to_f32(dyr[c]) * w[c]; }) / float(C);
    const float gn_mean = lane_sum(C, [&](int64_t c) { return to_f32(dyr[c]) * w[c] * (to_f32(xr[c]) - mu) * rs; }) /
                          float(C);
    T* dxr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float g = to_f32(dyr[c]) * w[c], n = (to_f32(xr[c]) - mu) * rs;
      dxr[c] = from_f32<T>(rs * (g - g_mean - n * gn_mean));
    }
    // A second pass over the row (in L1), so the compiler cannot fuse the add into the
    // multiply above: the bits stay those of the separate add.
    if (dres)
      for (int64_t c = 0; c < C; ++c) dxr[c] = from_f32<T>(to_f32(dxr[c]) + to_f32(dres[r * C + c]));
  }
}

void forward(const Tensor& x, const Tensor* res, const Tensor* sum, const Tensor& w, const Tensor& b, float eps,
             const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const std::vector<float> wf = to_f32_vector(&w), bf = to_f32_vector(&b);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_t(x.data<T>(), res ? res->data<T>() : nullptr, sum ? sum->data<T>() : nullptr, wf.data(), bf.data(), eps,
              y.data<T>(), mean.data<float>(), rstd.data<float>(), N, C);
  });
}

void backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
              const Tensor* dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const std::vector<float> wf = to_f32_vector(&w);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_t(dy.data<T>(), x.data<T>(), wf.data(), mean.data<float>(), rstd.data<float>(),
               dres ? dres->data<T>() : nullptr, dx.data<T>(), dw_accum.data<float>(), db_accum.data<float>(), N, C);
  });
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd) {
  forward(x, nullptr, nullptr, w, b, eps, y, mean, rstd);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum) {
  backward(dy, x, w, mean, rstd, nullptr, dx, dw_accum, db_accum);
}

void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  forward(x, &r, &sum, w, b, eps, y, mean, rstd);
}

void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                            const Tensor& dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum) {
  backward(dy, x, w, mean, rstd, &dres, dx, dw_accum, db_accum);
}

}  // namespace mt::cpu
