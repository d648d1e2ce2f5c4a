// gelu (tanh approximation) against a double reference and finite differences; dropout's mask,
// scaling and backward, all from philox(seed, stream, index).
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

double gelu_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

class GeluForward : public ::testing::TestWithParam<DType> {};

TEST_P(GeluForward, MatchesTanhApproximationInDouble) {
  const DType dt = GetParam();
  const auto x = rounded(random_vec(1000, 1, -6, 6), dt);
  Tensor y = Tensor::empty({1000}, dt);
  gelu_forward(from_vec(x, {1000}, dt), y);
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = gelu_ref(x[i]);
  const double tol = dt == DType::F32 ? 1e-5 : dt == DType::BF16 ? 1e-2 : 2e-3;
  expect_close(to_vec(y), want, tol, tol, "y");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GeluForward, ::testing::Values(DType::F32, DType::BF16, DType::F16));

TEST(GeluBackward, MatchesFiniteDifferences) {
  const size_t n = 500;
  const auto x = random_vec(n, 2, -5, 5), g = random_vec(n, 3);
  Tensor dx = Tensor::empty({int64_t(n)}, DType::F32);
  gelu_backward(from_vec(g, {int64_t(n)}), from_vec(x, {int64_t(n)}), dx);
  std::vector<double> vx = to_double(x), fd(n);
  auto loss = [&](const std::vector<double>& v) {
    double l = 0;
    for (size_t i = 0; i < n; ++i) l += g[i] * gelu_ref(v[i]);
    return l;
  };
  for (size_t i = 0; i < n; ++i) fd[i] = central_difference(vx, i, 1e-4, loss);
  expect_close(to_vec(dx), fd, 1e-4, 1e-5, "dx");
}

TEST(GeluBackward, DxMayAliasDy) {
  Tensor x = random_tensor({300}, DType::BF16, 4), dy = random_tensor({300}, DType::BF16, 5);
  Tensor dx = Tensor::empty({300}, DType::BF16);
  gelu_backward(dy, x, dx);
  gelu_backward(dy, x, dy);
  EXPECT_TRUE(bitwise_equal(dx, dy));
}

TEST(Dropout, KeepsExactlyWherePhiloxUniformExceedsPAndScales) {
  const int64_t n = 4099;  // not a multiple of 4: the tail of the last Philox block
  const float p = 0.3f;
  const uint64_t seed = 1234, stream = rng_stream("test/dropout");
  const auto x = random_vec(size_t(n), 6, 0.5, 2);  // nonzero, so zeros mark dropped elements
  Tensor y = Tensor::empty({n}, DType::F32);
  dropout_forward(from_vec(x, {n}), y, p, seed, stream);
  const auto got = to_vec(y);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(seed, stream, uint64_t(i)) > p;
    kept += keep;
    ASSERT_EQ(got[i], keep ? x[i] * (1.0f / (1.0f - p)) : 0.0f) << i;
  }
  EXPECT_NEAR(double(kept) / double(n), 1 - p, 0.03);
}

TEST(Dropout, BackwardAppliesTheSameMaskAndScale) {
  const int64_t n = 1000;
  const float p = 0.5f;
  Tensor x = random_tensor({n}, DType::F32, 7, 0.5, 2), y = Tensor::empty({n}, DType::F32);
  dropout_forward(x, y, p, 9, 10);
  Tensor ones = from_vec(std::vector<float>(size_t(n), 1.0f), {n}), dx = Tensor::empty({n}, DType::F32);
  dropout_backward(ones, dx, p, 9, 10);
  const auto vx = to_vec(x), vy = to_vec(y), vdx = to_vec(dx);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(vy[i], vx[i] * vdx[i]) << i;  // y = x * dy/dx
}

TEST(Dropout, ZeroProbabilityCopiesAndInPlaceWorks) {
  Tensor x = random_tensor({100}, DType::F16, 11), y = Tensor::empty({100}, DType::F16);
  dropout_forward(x, y, 0.0f, 1, 2);
  EXPECT_TRUE(bitwise_equal(x, y));
  Tensor out = Tensor::empty({100}, DType::F16);
  dropout_forward(x, out, 0.2f, 1, 2);
  dropout_forward(x, x, 0.2f, 1, 2);
  EXPECT_TRUE(bitwise_equal(x, out));
}

// A slice x[k, k + n) dropped at offset k draws the full tensor's mask for those elements, also
// when k is not a multiple of 4 (the slice starts and ends mid Philox block) and for both passes.
TEST(Dropout, SliceAtAnOffsetMatchesTheFullTensor) {
  const int64_t n = 1031;
  const float p = 0.4f;
  const uint64_t seed = 99, stream = rng_stream("test/dropout_offset");
  const auto x = random_vec(size_t(n), 12, 0.5, 2);
  Tensor y = Tensor::empty({n}, DType::F32), dx = Tensor::empty({n}, DType::F32);
  dropout_forward(from_vec(x, {n}), y, p, seed, stream);
  dropout_backward(from_vec(x, {n}), dx, p, seed, stream);
  const auto vy = to_vec(y), vdx = to_vec(dx);
  for (int64_t k : {1, 2, 3, 5, 6, 7, 401, 1030}) {
    for (int64_t len : {1, 2, 3, 4, 5, 9, 100}) {
      if (k + len > n) continue;
      const std::vector<float> xs(x.begin() + k, x.begin() + k + len);
      Tensor ys = Tensor::empty({len}, DType::F32), dxs = Tensor::empty({len}, DType::F32);
      dropout_forward(from_vec(xs, {len}), ys, p, seed, stream, {}, uint64_t(k));
      dropout_backward(from_vec(xs, {len}), dxs, p, seed, stream, {}, uint64_t(k));
      const auto gy = to_vec(ys), gdx = to_vec(dxs);
      for (int64_t i = 0; i < len; ++i) {
        ASSERT_EQ(gy[size_t(i)], vy[size_t(k + i)]) << "k=" << k << " len=" << len << " i=" << i;
        ASSERT_EQ(gdx[size_t(i)], vdx[size_t(k + i)]) << "k=" << k << " len=" << len << " i=" << i;
      }
    }
  }
}

// Offsets past 2^32 elements (a long sequence's global [B, T, C] index) still follow the formula.
TEST(Dropout, LargeOffsetFollowsPhiloxUniform) {
  const int64_t n = 37;
  const float p = 0.5f;
  const uint64_t seed = 5, stream = 6, offset = (uint64_t(1) << 33) + 3;
  const auto x = random_vec(size_t(n), 13, 0.5, 2);
  Tensor y = Tensor::empty({n}, DType::BF16);
  dropout_forward(from_vec(x, {n}, DType::BF16), y, p, seed, stream, {}, offset);
  const auto xr = rounded(x, DType::BF16), got = to_vec(y);
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(seed, stream, offset + uint64_t(i)) > p;
    ASSERT_EQ(got[size_t(i)], keep ? rounded({xr[size_t(i)] * 2.0f}, DType::BF16)[0] : 0.0f) << i;
  }
}

}  // namespace
}  // namespace mt
