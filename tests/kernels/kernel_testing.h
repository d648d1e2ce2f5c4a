#pragma once
// Helpers for the kernel tests: tensors from/to float vectors, seeded random data, comparisons
// with a stated tolerance, and running a body under a given OpenMP thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/half.h"
#include "core/tensor.h"

namespace mt::testing {

inline std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// A CPU tensor of `dtype` holding `vals` (rounded to the dtype).
inline Tensor from_vec(const std::vector<float>& vals, const Shape& shape, DType dtype = DType::F32) {
  Tensor t = Tensor::empty(shape, dtype);
  EXPECT_EQ(size_t(t.numel()), vals.size());
  for (size_t i = 0; i < vals.size(); ++i) {
    switch (dtype) {
      case DType::F32:
        t.data<float>()[i] = vals[i];
        break;
      case DType::BF16:
        t.data<bf16>()[i] = to_bf16(vals[i]);
        break;
      case DType::F16:
        t.data<f16>()[i] = to_f16(vals[i]);
        break;
      default:
        ADD_FAILURE() << "from_vec: not a float dtype";
    }
  }
  return t;
}

inline std::vector<float> to_vec(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype()) {
      case DType::F32:
        v[i] = t.data<float>()[i];
        break;
      case DType::BF16:
        v[i] = to_f32(t.data<bf16>()[i]);
        break;
      case DType::F16:
        v[i] = to_f32(t.data<f16>()[i]);
        break;
      default:
        ADD_FAILURE() << "to_vec: not a float dtype";
    }
  }
  return v;
}

// The values a float vector takes after storing it in `dtype` (what a kernel actually reads).
inline std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  return to_vec(from_vec(v, {int64_t(v.size())}, dtype));
}

inline Tensor random_tensor(const Shape& shape, DType dtype, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  return from_vec(random_vec(size_t(shape_numel(shape)), seed, lo, hi), shape, dtype);
}

// |got - want| <= atol + rtol * |want| elementwise; reports the first few mismatches.
template <class G, class W>
void expect_close(const std::vector<G>& got, const std::vector<W>& want, double rtol, double atol,
                  const char* what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (!(std::abs(g - w) <= atol + rtol * std::abs(w)) && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << g << ", want " << w;
  }
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Runs fn() with `threads` OpenMP threads, restoring the previous setting.
template <class Fn>
void with_threads(int threads, Fn&& fn) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  fn();
  omp_set_num_threads(before);
}

// Central finite difference of a scalar function of x[i].
template <class F>
double central_difference(std::vector<double>& x, size_t i, double eps, F&& loss) {
  const double saved = x[i];
  x[i] = saved + eps;
  const double up = loss(x);
  x[i] = saved - eps;
  const double down = loss(x);
  x[i] = saved;
  return (up - down) / (2 * eps);
}

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

}  // namespace mt::testing
