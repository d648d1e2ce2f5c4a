// RMSNorm over the last dimension C of x [N, C] (fp32 math whatever the storage type):
//   forward:  rstd = 1/sqrt(sum x^2 / C + eps), y = x rstd w
//   backward: xhat = x rstd, g = dy w, dx = rstd (g - xhat mean(g xhat)),  dw += sum_rows dy xhat
// Rows are independent and run in parallel; a row stays in cache across its passes, so forward
// reads x once and writes y. Backward first reduces dw with threads owning blocks of columns
// and walking the rows in order (deterministic whatever the thread count; one read of dy and x),
// then writes dx with threads owning rows (a second read of dy and x). dw comes first so dx may
// alias dy. Row sums run in 8 partial sums (norm_rows.h: element c into lane c % 8) added in a fixed
// order: they vectorise and depend on C only.
// add_rmsnorm_forward / rmsnorm_backward_add: the residual add is done in the same pass over each
// row with the rounding of the unfused sequence rmsnorm.h defines them by (sum is stored in x's
// dtype and the norm reads the stored value; the norm's dx is rounded before dres is added), so
// they give the same bits as the separate ops.
// qk_rmsnorm: the q and k heads of qkv [B, T, G, Q/G + 2, D] are rows of D normalised by the same
// row functions as rmsnorm (so a head gives the bits rmsnorm_forward/backward give it alone);
// value heads are copied. dq_w, dk_w are reduced like dw, over the q heads (resp. k heads) in
// memory order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/norm_rows.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

// Which rows a pass normalises: row i of `n` per group (of `per` rows, `per_rstd` of them with a
// statistic) sits at row (i / n) per + first + i % n of the tensor and has statistic
// (i / n) per_rstd + first + i % n. Plain RMSNorm: every row, n = per = per_rstd = 1.
struct Rows {
  int64_t n = 1, first = 0, per = 1, per_rstd = 1;
  int64_t row(int64_t i) const { return (i / n) * per + first + i % n; }
  int64_t stat(int64_t i) const { return (i / n) * per_rstd + first + i % n; }
};

// y = RMSNorm(x) of one row; returns rstd.
template <class T>
inline float forward_row(const T* x, const float* w, float eps, T* y, int64_t C) {
  const float ss = lane_sum(C, [&](int64_t c) {
    const float v = to_f32(x[c]);
    return v * v;
  });
  const float rs = 1.0f / std::sqrt(ss / float(C) + eps);
  for (int64_t c = 0; c < C; ++c) y[c] = from_f32<T>(to_f32(x[c]) * rs * w[c]);
  return rs;
}

// dx of one row (dx may alias dy), then dx += dres when given.
template <class T>
inline void dx_row(const T* dy, const T* x, const float* w, float rs, const T* dres, T* dx, int64_t C) {
  const float m = lane_sum(C, [&](int64_t c) { return to_f32(dy[c]) * w[c] * (to_f32(x[c]) * rs); }) / float(C);
  for (int64_t c = 0; c < C; ++c) {
    const float g = to_f32(dy[c]) * w[c], xhat = to_f32(x[c]) * rs;
    dx[c] = from_f32<T>(rs * (g - xhat * m));
  }
  // A second pass over the row (in L1), so the compiler cannot fuse the add into the multiply
  // above: the bits stay those of the separate add.
  if (dres)
    for (int64_t c = 0; c < C; ++c) dx[c] = from_f32<T>(to_f32(dx[c]) + to_f32(dres[c]));
}

// dw[c] += sum over the `count` rows of `rows` (in order) of dy xhat. Threads own blocks of
// columns, so the order of the sum does not depend on the thread count.
template <class T>
void dw_rows(const T* dy, const T* x, const float* rstd, Rows rows, int64_t count, int64_t C, float* dw) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, width = std::min(kCols, C - c0);
    float acc[kCols] = {};
    for (int64_t i = 0; i < count; ++i) {
      const int64_t off = rows.row(i) * C + c0;
      const float rs = rstd[rows.stat(i)];
      for (int64_t j = 0; j < width; ++j) acc[j] += to_f32(dy[off + j]) * (to_f32(x[off + j]) * rs);
    }
    for (int64_t j = 0; j < width; ++j) dw[c0 + j] += acc[j];
  }
}

// With res: sum = x + res (stored as T) is the row normalised; sum may alias x or res.
template <class T>
void forward_t(const T* x, const T* res, T* sum, const float* w, float eps, T* y, float* rstd, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = residual_row(x, res, sum, r, C);
    rstd[r] = forward_row(xr, w, eps, y + r * C, C);
  }
}

template <class T>
void backward_t(const T* dy, const T* x, const float* w, const float* rstd, const T* dres, T* dx, float* dw, int64_t N,
                int64_t C) {
  dw_rows(dy, x, rstd, Rows{}, N, C, dw);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r)
    dx_row(dy + r * C, x + r * C, w, rstd[r], dres ? dres + r * C : nullptr, dx + r * C, C);
}

void forward(const Tensor& x, const Tensor* res, const Tensor* sum, const Tensor& w, float eps, const Tensor& y,
             const Tensor& rstd) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const std::vector<float> wf = to_f32_vector(&w);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_t(x.data<T>(), res ? res->data<T>() : nullptr, sum ? sum->data<T>() : nullptr, wf.data(), eps,
              y.data<T>(), rstd.data<float>(), N, C);
  });
}

void backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor* dres,
              const Tensor& dx, const Tensor& dw_accum) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const std::vector<float> wf = to_f32_vector(&w);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_t(dy.data<T>(), x.data<T>(), wf.data(), rstd.data<float>(), dres ? dres->data<T>() : nullptr,
               dx.data<T>(), dw_accum.data<float>(), N, C);
  });
}

// The head layout of qkv [B, T, G, Q/G + 2, D]: `per` heads a group, the last one the value head.
struct QkLayout {
  int64_t D, per, groups;  // groups: B T G
  explicit QkLayout(const Tensor& qkv) : D(qkv.size(4)), per(qkv.size(3)), groups(qkv.numel() / (D * per)) {}
  Rows q() const { return Rows{per - 2, 0, per, per - 1}; }
  Rows k() const { return Rows{1, per - 2, per, per - 1}; }
};

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd) {
  forward(x, nullptr, nullptr, w, eps, y, rstd);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                      const Tensor& dw_accum) {
  backward(dy, x, w, rstd, nullptr, dx, dw_accum);
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& sum,
                         const Tensor& y, const Tensor& rstd) {
  forward(x, &r, &sum, w, eps, y, rstd);
}

void rmsnorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dres,
                          const Tensor& dx, const Tensor& dw_accum) {
  backward(dy, x, w, rstd, &dres, dx, dw_accum);
}

void qk_rmsnorm_forward(const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w, int /*n_query_groups*/, float eps,
                        const Tensor& qkv_out, const Tensor& rstd) {
  const QkLayout L(qkv_in);
  const std::vector<float> qw = to_f32_vector(&q_w), kw = to_f32_vector(&k_w);
  dispatch_float(qkv_in.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = qkv_in.data<T>();
    T* out = qkv_out.data<T>();
    float* rs = rstd.data<float>();
    const int64_t D = L.D, per = L.per;
#pragma omp parallel for schedule(static)
    for (int64_t head = 0; head < L.groups * per; ++head) {
      const int64_t g = head / per, h = head % per;
      if (h == per - 1) {
        std::memcpy(out + head * D, in + head * D, size_t(D) * sizeof(T));
        continue;
      }
      const float* w = h < per - 2 ? qw.data() : kw.data();
      rs[g * (per - 1) + h] = forward_row(in + head * D, w, eps, out + head * D, D);
    }
  });
}

void qk_rmsnorm_backward(const Tensor& dqkv_out, const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w,
                         int /*n_query_groups*/, const Tensor& rstd, const Tensor& dqkv_in, const Tensor& dq_w_accum,
                         const Tensor& dk_w_accum) {
  const QkLayout L(qkv_in);
  const std::vector<float> qw = to_f32_vector(&q_w), kw = to_f32_vector(&k_w);
  dispatch_float(qkv_in.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* dy = dqkv_out.data<T>();
    const T* x = qkv_in.data<T>();
    T* dx = dqkv_in.data<T>();
    const float* rs = rstd.data<float>();
    const int64_t D = L.D, per = L.per;
    dw_rows(dy, x, rs, L.q(), L.groups * (per - 2), D, dq_w_accum.data<float>());
    dw_rows(dy, x, rs, L.k(), L.groups, D, dk_w_accum.data<float>());
#pragma omp parallel for schedule(static)
    for (int64_t head = 0; head < L.groups * per; ++head) {
      const int64_t g = head / per, h = head % per;
      if (h == per - 1) {
        if (dx != dy) std::memcpy(dx + head * D, dy + head * D, size_t(D) * sizeof(T));
        continue;
      }
      const float* w = h < per - 2 ? qw.data() : kw.data();
      dx_row(dy + head * D, x + head * D, w, rs[g * (per - 1) + h], static_cast<const T*>(nullptr), dx + head * D, D);
    }
  });
}

}  // namespace mt::cpu
