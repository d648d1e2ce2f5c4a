// gemm: C = alpha op(A) op(B) + beta C + bias against a double-precision triple loop;
// bias_grad_accumulate as the column sums of dy.
#include "kernels/gemm.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

// op(X)[r, c] for X stored row-major with `cols` columns.
double at(const std::vector<float>& x, int64_t cols, bool trans, int64_t r, int64_t c) {
  return trans ? x[c * cols + r] : x[r * cols + c];
}

std::vector<double> reference_gemm(const std::vector<float>& a, bool ta, const std::vector<float>& b, bool tb,
                                   std::vector<float> c, int64_t m, int64_t n, int64_t k, double alpha, double beta,
                                   const std::vector<float>& bias) {
  std::vector<double> out(size_t(m * n));
  const int64_t a_cols = ta ? m : k, b_cols = tb ? k : n;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += at(a, a_cols, ta, i, p) * at(b, b_cols, tb, p, j);
      out[i * n + j] = alpha * s + beta * c[i * n + j] + (bias.empty() ? 0.0 : bias[j]);
    }
  return out;
}

struct Case {
  bool ta, tb;
};

class GemmTransposes : public ::testing::TestWithParam<Case> {};

TEST_P(GemmTransposes, MatchesDoublePrecisionReferenceInFp32) {
  const auto [ta, tb] = GetParam();
  const int64_t m = 13, n = 7, k = 19;
  const Shape sa = ta ? Shape{k, m} : Shape{m, k}, sb = tb ? Shape{n, k} : Shape{k, n};
  const auto va = random_vec(size_t(m * k), 1), vb = random_vec(size_t(k * n), 2);
  Tensor c = Tensor::zeros({m, n}, DType::F32);
  gemm(from_vec(va, sa), ta, from_vec(vb, sb), tb, c, 0.5f);
  expect_close(to_vec(c), reference_gemm(va, ta, vb, tb, std::vector<float>(size_t(m * n)), m, n, k, 0.5, 0, {}), 1e-5,
               1e-6, "C");
}

INSTANTIATE_TEST_SUITE_P(AllFourCombos, GemmTransposes,
                         ::testing::Values(Case{false, false}, Case{false, true}, Case{true, false}, Case{true, true}));

TEST(Gemm, BetaOneAccumulatesIntoFp32AndAddsBias) {
  const int64_t m = 9, n = 11, k = 5;
  const auto va = random_vec(size_t(m * k), 3), vb = random_vec(size_t(n * k), 4), vc = random_vec(size_t(m * n), 5);
  const auto vbias = random_vec(size_t(n), 6);
  Tensor c = from_vec(vc, {m, n}), bias = from_vec(vbias, {n});
  gemm(from_vec(va, {m, k}), false, from_vec(vb, {n, k}), true, c, 1.0f, 1.0f, &bias);
  expect_close(to_vec(c), reference_gemm(va, false, vb, true, vc, m, n, k, 1, 1, vbias), 1e-5, 1e-6, "C");
}

TEST(Gemm, Bf16InputsComputeInFp32WithFp32OrBf16Output) {
  const int64_t m = 16, n = 24, k = 32;
  // The reference sees the bf16-rounded inputs, so only the output rounding differs.
  const auto va = rounded(random_vec(size_t(m * k), 7), DType::BF16);
  const auto vb = rounded(random_vec(size_t(k * n), 8), DType::BF16);
  const auto vbias = rounded(random_vec(size_t(n), 9), DType::BF16);
  const auto want = reference_gemm(va, false, vb, false, std::vector<float>(size_t(m * n)), m, n, k, 1, 0, vbias);
  Tensor a = from_vec(va, {m, k}, DType::BF16), b = from_vec(vb, {k, n}, DType::BF16);
  Tensor bias = from_vec(vbias, {n}, DType::BF16);

  Tensor c32 = Tensor::empty({m, n}, DType::F32);
  gemm(a, false, b, false, c32, 1.0f, 0.0f, &bias);
  expect_close(to_vec(c32), want, 1e-5, 1e-5, "fp32 C");

  Tensor c16 = Tensor::empty({m, n}, DType::BF16);
  gemm(a, false, b, false, c16, 1.0f, 0.0f, &bias);
  expect_close(to_vec(c16), want, 8e-3, 1e-3, "bf16 C");  // bf16 keeps 8 bits: relative error <= 2^-8
}

TEST(Gemm, HalfOutputWithBetaReadsTheOldValues) {
  const int64_t m = 4, n = 6, k = 3;
  const auto va = rounded(random_vec(size_t(m * k), 10), DType::F16);
  const auto vb = rounded(random_vec(size_t(k * n), 11), DType::F16);
  const auto vc = rounded(random_vec(size_t(m * n), 12), DType::F16);
  Tensor c = from_vec(vc, {m, n}, DType::F16);
  gemm(from_vec(va, {m, k}, DType::F16), false, from_vec(vb, {k, n}, DType::F16), false, c, 2.0f, 0.5f);
  expect_close(to_vec(c), reference_gemm(va, false, vb, false, vc, m, n, k, 2, 0.5, {}), 1e-3, 1e-3, "fp16 C");
}

TEST(Gemm, GradientOfInputMatchesFiniteDifferences) {
  // L = sum(W * (A @ B)); dL/dA = W @ B^T, computed with gemm itself.
  const int64_t m = 5, n = 4, k = 6;
  const auto va = random_vec(size_t(m * k), 13), vb = random_vec(size_t(k * n), 14), vw = random_vec(size_t(m * n), 15);
  Tensor da = Tensor::empty({m, k}, DType::F32);
  gemm(from_vec(vw, {m, n}), false, from_vec(vb, {k, n}), true, da);
  auto loss = [&](const std::vector<double>& a) {
    double l = 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += a[i * k + p] * vb[p * n + j];
        l += vw[i * n + j] * s;
      }
    return l;
  };
  std::vector<double> a = to_double(va), fd(a.size());
  for (size_t i = 0; i < a.size(); ++i) fd[i] = central_difference(a, i, 1e-3, loss);
  expect_close(to_vec(da), fd, 1e-4, 1e-5, "dA");
}

TEST(BiasGrad, AccumulatesColumnSumsMatchingFiniteDifferences) {
  // L = sum(W * (X + bias)) => dL/dbias[c] = sum_n W[n, c]; accumulated onto existing grads.
  const int64_t N = 37, C = 150;  // C spans several column blocks
  const auto vw = random_vec(size_t(N * C), 16), vdb = random_vec(size_t(C), 17);
  Tensor db = from_vec(vdb, {C});
  bias_grad_accumulate(from_vec(vw, {N, C}), db);
  std::vector<double> bias(size_t(C), 0.0), want(static_cast<size_t>(C));
  auto loss = [&](const std::vector<double>& b) {
    double l = 0;
    for (int64_t r = 0; r < N; ++r)
      for (int64_t c = 0; c < C; ++c) l += vw[r * C + c] * (1.0 + b[c]);
    return l;
  };
  for (int64_t c = 0; c < C; ++c) want[c] = vdb[c] + central_difference(bias, size_t(c), 1e-3, loss);
  expect_close(to_vec(db), want, 1e-5, 1e-5, "db");
}

TEST(BiasGrad, ReadsBf16Gradients) {
  const int64_t N = 8, C = 3;
  const auto vdy = rounded(random_vec(size_t(N * C), 18), DType::BF16);
  Tensor db = Tensor::zeros({C}, DType::F32);
  bias_grad_accumulate(from_vec(vdy, {N, C}, DType::BF16), db);
  std::vector<double> want(size_t(C), 0.0);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c) want[c] += vdy[r * C + c];
  expect_close(to_vec(db), want, 1e-6, 1e-6, "db");
}

TEST(Gemm, IsBitIdenticalForOneAndTwoThreads) {
  const int64_t m = 96, n = 80, k = 200;
  Tensor a = random_tensor({m, k}, DType::BF16, 19), b = random_tensor({n, k}, DType::BF16, 20);
  Tensor c1 = Tensor::empty({m, n}, DType::F32), c2 = Tensor::empty({m, n}, DType::F32);
  with_threads(1, [&] { gemm(a, false, b, true, c1); });
  with_threads(2, [&] { gemm(a, false, b, true, c2); });
  EXPECT_TRUE(bitwise_equal(c1, c2));
}

}  // namespace
}  // namespace mt

// A heuristic-only scope turns autotuning off for this thread while it lives, nested too, and
// leaves the setting as it was.
TEST(GemmHeuristicOnly, ScopesTurnAutotuningOffAndRestoreIt) {
  const bool before = mt::gemm_autotune();
  mt::set_gemm_autotune(true);
  {
    mt::GemmHeuristicOnly outer;
    EXPECT_FALSE(mt::gemm_autotune());
    {
      mt::GemmHeuristicOnly inner;
      EXPECT_FALSE(mt::gemm_autotune());
    }
    EXPECT_FALSE(mt::gemm_autotune());
  }
  EXPECT_TRUE(mt::gemm_autotune());
  mt::set_gemm_autotune(before);
}
