// The CPU GEMM's fused epilogues and the SIMD GeLU behind them: gemm with a bias,
// gemm_bias_gelu, gemm_dgelu and gemm_wgrad_bgrad give the very bits of the unfused sequences
// gemm.h defines them by, at the model's shapes and at odd ones; and the GeLU of the path that
// runs (AVX-512 or AVX2, forward and derivative) matches the tanh approximation in double, including tails of every length and inf/NaN.
#include <cmath>
#include <limits>

#include "kernels/activation.h"
#include "kernels/cpu/blas.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/kernel_testing.h"
#if defined(__x86_64__)
#include "kernels/cpu/gelu_avx2.h"
#include "kernels/cpu/gelu_avx512.h"
#endif

namespace mt {
namespace {

using namespace mt::testing;

struct Shape3 {
  int64_t m, n, k;
};
const Shape3 kShapes[] = {{256, 1536, 384}, {37, 130, 33}, {1, 7, 1}};

TEST(GemmEpilogueCpu, BiasGeluIsGemmThenGeluBitForBit) {
  uint32_t seed = 1;
  for (const auto& [m, n, k] : kShapes) {
    Tensor a = random_tensor({m, k}, DType::F32, seed++), w = random_tensor({n, k}, DType::F32, seed++);
    Tensor bias = random_tensor({n}, DType::F32, seed++);
    Tensor pre = Tensor::empty({m, n}, DType::F32), y = Tensor::empty({m, n}, DType::F32);
    Tensor pre_ref = Tensor::empty({m, n}, DType::F32), y_ref = Tensor::empty({m, n}, DType::F32);
    gemm_bias_gelu(a, false, w, true, &bias, pre, y);
    gemm(a, false, w, true, pre_ref, 1.0f, 0.0f, &bias);
    gelu_forward(pre_ref, y_ref);
    EXPECT_TRUE(bitwise_equal(pre, pre_ref)) << m << "x" << n << "x" << k;
    EXPECT_TRUE(bitwise_equal(y, y_ref)) << m << "x" << n << "x" << k;
  }
}

TEST(GemmEpilogueCpu, DgeluIsGemmThenGeluBackwardThenBiasGradBitForBit) {
  uint32_t seed = 20;
  for (const auto& [m, n, k] : kShapes) {
    Tensor dy = random_tensor({m, k}, DType::F32, seed++), w = random_tensor({k, n}, DType::F32, seed++);
    Tensor pre = random_tensor({m, n}, DType::F32, seed++, -4.0f, 4.0f);
    Tensor dpre = Tensor::empty({m, n}, DType::F32), dpre_ref = Tensor::empty({m, n}, DType::F32);
    Tensor db = random_tensor({n}, DType::F32, seed), db_ref = random_tensor({n}, DType::F32, seed++);
    gemm_dgelu(dy, false, w, false, pre, dpre, &db);
    gemm(dy, false, w, false, dpre_ref);
    gelu_backward(dpre_ref, pre, dpre_ref);
    bias_grad_accumulate(dpre_ref, db_ref);
    EXPECT_TRUE(bitwise_equal(dpre, dpre_ref)) << m << "x" << n << "x" << k;
    EXPECT_TRUE(bitwise_equal(db, db_ref)) << m << "x" << n << "x" << k;
  }
}

TEST(GemmEpilogueCpu, WgradBgradIsGemmThenBiasGradBitForBit) {
  uint32_t seed = 30;
  for (const auto& [N, in, out] : kShapes) {
    Tensor dy = random_tensor({N, out}, DType::F32, seed++), x = random_tensor({N, in}, DType::F32, seed++);
    Tensor dw = random_tensor({out, in}, DType::F32, seed), dw_ref = random_tensor({out, in}, DType::F32, seed++);
    Tensor db = random_tensor({out}, DType::F32, seed), db_ref = random_tensor({out}, DType::F32, seed++);
    gemm_wgrad_bgrad(dy, x, dw, db);
    gemm(dy, true, x, false, dw_ref, 1.0f, 1.0f);
    bias_grad_accumulate(dy, db_ref);
    EXPECT_TRUE(bitwise_equal(dw, dw_ref)) << N << "x" << in << "x" << out;
    EXPECT_TRUE(bitwise_equal(db, db_ref)) << N << "x" << in << "x" << out;
    // dw_beta 0 (a round's first gradient): dw is overwritten, its stale NaNs never read.
    fill(dw, std::numeric_limits<float>::quiet_NaN());
    gemm_wgrad_bgrad(dy, x, dw, db, 0.0f);
    gemm(dy, true, x, false, dw_ref, 1.0f, 0.0f);
    bias_grad_accumulate(dy, db_ref);
    EXPECT_TRUE(bitwise_equal(dw, dw_ref)) << N << "x" << in << "x" << out << " beta 0";
    EXPECT_TRUE(bitwise_equal(db, db_ref)) << N << "x" << in << "x" << out << " beta 0";
  }
}

TEST(GemmEpilogueCpu, BiasIsAddedOnceAfterTheProduct) {
  const int64_t m = 30, n = 70, k = 20;
  const auto va = random_vec(size_t(m * k), 40), vb = random_vec(size_t(k * n), 41), vbias = random_vec(size_t(n), 42);
  Tensor c = Tensor::empty({m, n}, DType::F32), bias = from_vec(vbias, {n});
  gemm(from_vec(va, {m, k}), false, from_vec(vb, {k, n}), false, c, 1.0f, 0.0f, &bias);
  std::vector<double> want(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += double(va[i * k + p]) * vb[p * n + j];
      want[i * n + j] = s + vbias[j];
    }
  expect_close(to_vec(c), want, 1e-5, 1e-5, "C");
}

#if defined(__x86_64__)
// The path's GeLU (AVX-512 or AVX2); null on the portable path.
struct SimdGelu {
  void (*forward)(const float*, float*, int64_t) = nullptr;
  void (*backward)(const float*, const float*, float*, int64_t) = nullptr;
};
SimdGelu simd_gelu() {
  if (cpu::sgemm_avx512_available()) return {&cpu::avx512::gelu_forward, &cpu::avx512::gelu_backward};
  if (cpu::sgemm_avx2_available()) return {&cpu::avx2::gelu_forward, &cpu::avx2::gelu_backward};
  return {};
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double dgelu_ref(double x) {
  const double u = std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * std::sqrt(2 / M_PI) * (1 + 3 * 0.044715 * x * x);
}

// Tolerance: 2e-6 relative, plus the formula's own conditioning in fp32: tanh(u) = 1 - 2/(e^2u + 1)
// carries an absolute error of a few u = 2^-24, which 1 + tanh (negative x) and 1 - tanh^2 (large
// |x|) turn into absolute errors of ~|x| u in gelu and ~|x| u'(x) u in gelu'; we allow 7 u each.
TEST(GeluSimd, MatchesTheTanhApproximationInDoubleForEveryTailLength) {
  const SimdGelu gelu = simd_gelu();
  if (!gelu.forward) GTEST_SKIP() << "the portable path has no SIMD GeLU";
  for (int64_t n = 1; n <= 40; ++n) {
    const auto x = random_vec(size_t(n), uint32_t(100 + n), -12.0f, 12.0f), dy = random_vec(size_t(n), uint32_t(n));
    std::vector<float> y(size_t(n) + 1, -7.0f), dx(size_t(n) + 1, -7.0f);
    gelu.forward(x.data(), y.data(), n);
    gelu.backward(dy.data(), x.data(), dx.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double xi = x[i], u = 1.0 / (1 << 24), du = std::sqrt(2 / M_PI) * (1 + 3 * 0.044715 * xi * xi);
      const double want = gelu_ref(xi), g = dy[i] * dgelu_ref(xi);
      EXPECT_NEAR(y[i], want, 2e-6 * std::abs(want) + 7 * u * std::abs(xi)) << "n " << n << " x " << xi;
      EXPECT_NEAR(dx[i], g, 2e-6 * std::abs(g) + 7 * u * std::abs(dy[i]) * (1 + std::abs(xi) * du))
          << "n " << n << " x " << xi;
    }
    EXPECT_EQ(y[n], -7.0f) << "wrote past the end, n " << n;
    EXPECT_EQ(dx[n], -7.0f) << "wrote past the end, n " << n;
  }
}

TEST(GeluSimd, HandlesInfinitiesNanAndExtremes) {
  const SimdGelu gelu = simd_gelu();
  if (!gelu.forward) GTEST_SKIP() << "the portable path has no SIMD GeLU";
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {inf, -inf, nan, 1e30f, -1e30f, 100.0f, -100.0f, 0.0f, -0.0f, 1e-30f};
  std::vector<float> y(x.size()), dx(x.size()), ones(x.size(), 1.0f);
  gelu.forward(x.data(), y.data(), int64_t(x.size()));
  gelu.backward(ones.data(), x.data(), dx.data(), int64_t(x.size()));
  EXPECT_EQ(y[0], inf);
  EXPECT_TRUE(std::isnan(y[1]));  // 0.5 x (1 + tanh) = -inf * 0, as the reference formula gives
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_EQ(y[3], 1e30f);
  EXPECT_EQ(y[4], -0.0f);
  EXPECT_EQ(y[5], 100.0f);
  EXPECT_EQ(y[6], -0.0f);
  EXPECT_EQ(y[7], 0.0f);
  EXPECT_NEAR(y[9], 0.5e-30f, 1e-36f);
  EXPECT_TRUE(std::isnan(dx[2]));
  EXPECT_EQ(dx[5], 1.0f);
  EXPECT_EQ(dx[6], 0.0f);
  EXPECT_NEAR(dx[7], 0.5f, 1e-7f);
}
#endif

}  // namespace
}  // namespace mt
