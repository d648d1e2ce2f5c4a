// SwiGLU's CPU reference against y = silu(gate) up in double, its backward against finite
// differences, the bf16 path against the formula on the rounded inputs, and row widths that
// exercise the 4-lane loops' tails.
#include <cmath>

#include "kernels/kernel_testing.h"
#include "kernels/swiglu.h"

namespace mt {
namespace {

using namespace mt::testing;

double sigmoid(double g) { return 1 / (1 + std::exp(-g)); }

// x rows [gate | up] of width 2F -> y rows of width F.
std::vector<double> swiglu_ref(const std::vector<float>& x, int64_t rows, int64_t F) {
  std::vector<double> y(size_t(rows * F));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < F; ++j) {
      const double g = x[size_t(r * 2 * F + j)], u = x[size_t(r * 2 * F + F + j)];
      y[size_t(r * F + j)] = g * sigmoid(g) * u;
    }
  return y;
}

class SwigluForward : public ::testing::TestWithParam<DType> {};

TEST_P(SwigluForward, MatchesSiluTimesUpInDouble) {
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : dt == DType::BF16 ? 1e-2 : 2e-3;
  for (int64_t F : {1, 3, 4, 7, 64, 129}) {
    const int64_t rows = 5;
    Tensor x = random_tensor({rows, 2 * F}, dt, uint32_t(F), -8, 8), y = Tensor::empty({rows, F}, dt);
    swiglu_forward(x, y);
    expect_close(to_vec(y), swiglu_ref(to_vec(x), rows, F), tol, tol, "y");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SwigluForward, ::testing::Values(DType::F32, DType::BF16, DType::F16));

// Leading dims are rows: [B, T, 2F] -> [B, T, F].
TEST(Swiglu, ThreeDimensionalRows) {
  Tensor x = random_tensor({2, 3, 10}, DType::F32, 1), y = Tensor::empty({2, 3, 5}, DType::F32);
  swiglu_forward(x, y);
  expect_close(to_vec(y), swiglu_ref(to_vec(x), 6, 5), 1e-5, 1e-6, "y");
}

// Very negative gates (e^-g overflows) give 0 and large ones the identity on g, without NaN.
TEST(Swiglu, SaturatesWithoutNan) {
  const std::vector<float> x = {-200.0f, -90.0f, 90.0f, 200.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  Tensor y = Tensor::empty({1, 4}, DType::F32), dx = Tensor::empty({1, 8}, DType::F32);
  swiglu_forward(from_vec(x, {1, 8}), y);
  swiglu_backward(from_vec({1, 1, 1, 1}, {1, 4}), from_vec(x, {1, 8}), dx);
  expect_close(to_vec(y), std::vector<double>{0, 0, 270, 800}, 1e-6, 1e-30, "y");
  expect_close(to_vec(dx), std::vector<double>{0, 0, 3, 4, 0, 0, 90, 200}, 1e-6, 1e-30, "dx");
}

TEST(SwigluBackward, MatchesFiniteDifferences) {
  for (int64_t F : {1, 5, 8, 13}) {
    const int64_t rows = 3;
    const size_t nx = size_t(rows * 2 * F), ny = size_t(rows * F);
    const auto x = random_vec(nx, uint32_t(10 + F), -6, 6), g = random_vec(ny, uint32_t(20 + F));
    Tensor dx = Tensor::empty({rows, 2 * F}, DType::F32);
    swiglu_backward(from_vec(g, {rows, F}), from_vec(x, {rows, 2 * F}), dx);
    std::vector<double> vx = to_double(x), fd(nx);
    auto loss = [&](const std::vector<double>& v) {
      double l = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < F; ++j) {
          const double gate = v[size_t(r * 2 * F + j)], up = v[size_t(r * 2 * F + F + j)];
          l += g[size_t(r * F + j)] * gate * sigmoid(gate) * up;
        }
      return l;
    };
    for (size_t i = 0; i < nx; ++i) fd[i] = central_difference(vx, i, 1e-4, loss);
    expect_close(to_vec(dx), fd, 1e-4, 1e-5, "dx");
  }
}

// bf16 inputs and outputs: the formula on the rounded inputs, within bf16's rounding.
TEST(SwigluBackward, Bf16MatchesTheFormula) {
  const int64_t rows = 4, F = 37;
  Tensor x = random_tensor({rows, 2 * F}, DType::BF16, 30, -4, 4), dy = random_tensor({rows, F}, DType::BF16, 31);
  Tensor dx = Tensor::empty({rows, 2 * F}, DType::BF16);
  swiglu_backward(dy, x, dx);
  const auto vx = to_vec(x), vdy = to_vec(dy);
  std::vector<double> want(size_t(rows * 2 * F));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < F; ++j) {
      const double g = vx[size_t(r * 2 * F + j)], u = vx[size_t(r * 2 * F + F + j)], d = vdy[size_t(r * F + j)];
      const double s = sigmoid(g);
      want[size_t(r * 2 * F + j)] = d * u * s * (1 + g * (1 - s));
      want[size_t(r * 2 * F + F + j)] = d * g * s;
    }
  expect_close(to_vec(dx), want, 1e-2, 1e-2, "dx");
}

// Rows are independent: the thread count does not change a bit.
TEST(Swiglu, SameBitsForAnyThreadCount) {
  Tensor x = random_tensor({64, 2 * 45}, DType::F32, 40, -5, 5), dy = random_tensor({64, 45}, DType::F32, 41);
  Tensor y1 = Tensor::empty({64, 45}, DType::F32), y2 = Tensor::empty({64, 45}, DType::F32);
  Tensor dx1 = Tensor::empty({64, 90}, DType::F32), dx2 = Tensor::empty({64, 90}, DType::F32);
  with_threads(1, [&] {
    swiglu_forward(x, y1);
    swiglu_backward(dy, x, dx1);
  });
  with_threads(2, [&] {
    swiglu_forward(x, y2);
    swiglu_backward(dy, x, dx2);
  });
  EXPECT_TRUE(bitwise_equal(y1, y2));
  EXPECT_TRUE(bitwise_equal(dx1, dx2));
}

TEST(SwigluDeathTest, RejectsBadShapesAndAliasing) {
  Tensor x = random_tensor({2, 8}, DType::F32, 50), dy = random_tensor({2, 4}, DType::F32, 51);
  Tensor y = Tensor::empty({2, 3}, DType::F32);
  EXPECT_DEATH(swiglu_forward(x, y), "y must have shape");
  Tensor odd = random_tensor({2, 7}, DType::F32, 52);
  EXPECT_DEATH(swiglu_forward(odd, y), "must be \\[..., 2F\\]");
  EXPECT_DEATH(swiglu_backward(dy, x, x), "must not alias");
}

}  // namespace
}  // namespace mt
