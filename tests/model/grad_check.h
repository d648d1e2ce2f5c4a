#pragma once
// Finite-difference gradient checking for layers with explicit backward.
// For out = f(x, params), the scalar L = sum(out * R) with a fixed random R; backward is fed
// dL/dout = R and must produce dL/dx and accumulate dL/dparams. Central differences with
// step h in fp32; a sampled subset of coordinates is checked against
//   |numeric - analytic| <= atol + rtol * |numeric|.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "model/param_buffer.h"

namespace mt::testing {

inline Tensor random_tensor(const Shape& s, uint64_t stream, float std = 1.0f) {
  Tensor t = Tensor::empty(s, DType::F32);
  fill_normal(t, std, 42, stream);
  return t;
}

inline double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  const float *pa = a.data<float>(), *pb = b.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) s += double(pa[i]) * double(pb[i]);
  return s;
}

struct GradCheckOptions {
  float h = 1e-2f;
  double rtol = 2e-2, atol = 2e-4;
  int samples_per_tensor = 12;
};

// forward(x) returns out; backward(dout) returns dx (and accumulates param grads into buf).
inline void check_gradients(ParamAndGradBuffer& buf, const Tensor& x,
                            const std::function<Tensor(const Tensor&)>& forward,
                            const std::function<Tensor(const Tensor&)>& backward, GradCheckOptions o = {}) {
  Tensor out = forward(x);
  Tensor R = random_tensor(out.shape(), 777);
  buf.zero_grads();
  Tensor dx = backward(R);
  auto loss = [&] { return dot(forward(x), R); };

  auto check = [&](float* p, const float* analytic, int64_t n, const std::string& what) {
    for (int s = 0; s < o.samples_per_tensor && s < n; ++s) {
      int64_t i = n <= o.samples_per_tensor ? s : int64_t(philox_u32(7, rng_stream(what), s) % uint64_t(n));
      float keep = p[i];
      p[i] = keep + o.h;
      double lp = loss();
      p[i] = keep - o.h;
      double lm = loss();
      p[i] = keep;
      double num = (lp - lm) / (2.0 * o.h);
      EXPECT_NEAR(analytic[i], num, o.atol + o.rtol * std::fabs(num)) << what << "[" << i << "]";
    }
  };
  for (const auto& info : buf.infos()) {
    Tensor p = buf.param(buf.find(info.name));
    Tensor g = buf.grad(buf.find(info.name));
    check(p.data<float>(), g.data<float>(), info.numel, info.name);
  }
  if (dx.defined()) check(x.data<float>(), dx.data<float>(), x.numel(), "input");
}

}  // namespace mt::testing
