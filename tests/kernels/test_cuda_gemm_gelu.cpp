// gemm_bias_gelu, gemm_dgelu and gemm_wgrad_bgrad on CUDA (cuBLASLt's GELU_AUX_BIAS, DGELU,
// DGELU_BGRAD and BGRADB epilogues for bf16/fp16) against the CPU reference, the unfused op sequence:
//  - random inputs at small, MLP-sized and odd shapes (n % 8 != 0 cannot be fused and must fall
//    back), outputs poisoned first, relative error within the dtype's tolerance, fp32 bias-grad
//    accumulation into a non-zero main grad, and the weight gradient overwriting (dw_beta 0);
//  - the epilogue's GeLU is our tanh approximation, not erf: on exact inputs where the two differ
//    (x in [-4.5, -2]), the fused result sits on tanh-GeLU and on our own CUDA gelu kernels;
//  - the three backward paths (MT_GEMM_FUSE_DGELU): the DGELU epilogue (the default), the plain
//    GEMM then gelu_backward + bias_grad_accumulate, and the opt-in DGELU_BGRAD epilogue;
//  - run-to-run bit reproducibility (all three).
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <tuple>
#include <vector>

#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

double gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double dgelu_tanh(double x) {
  const double t = std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * std::sqrt(2 / M_PI) * (1 + 3 * 0.044715 * x * x);
}
double dgelu_erf(double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * M_PI); }

struct Case {
  DType dt;
  bool with_bias;  // forward: a bias; backward: a bias-gradient accumulator
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(name_of(info.param.dt)) + (info.param.with_bias ? "_bias" : "_nobias");
}

// Which shapes the epilogue must take (half operands and n % 8 == 0); the rest fall back.
bool expect_fused(DType dt, int64_t n) { return dt != DType::F32 && n % 8 == 0; }

double tol(DType dt) { return dt == DType::F32 ? 1e-4 : tol_for(dt); }

class CudaGemmGelu : public ::testing::TestWithParam<Case> {};

// m tokens, k inputs, n outputs (n = fc1's width, where the GeLU is).
constexpr std::tuple<int64_t, int64_t, int64_t> kShapes[] = {{256, 64, 256}, {512, 768, 3072}, {37, 24, 52}};

TEST_P(CudaGemmGelu, ForwardMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, with_bias] = GetParam();
  for (auto [m, k, n] : kShapes) {
    Tensor x = random_tensor({m, k}, dt, 1), w = random_tensor({n, k}, dt, 2, -0.1f, 0.1f);
    Tensor bias = random_tensor({n}, dt, 3, -0.5f, 0.5f), bias_gpu = to_gpu(bias);
    Tensor pre = Tensor::empty({m, n}, dt), y = Tensor::empty({m, n}, dt);
    gemm_bias_gelu(x, false, w, true, with_bias ? &bias : nullptr, pre, y);
    Tensor pre_gpu = poisoned({m, n}, dt), y_gpu = poisoned({m, n}, dt);
    const bool fused =
        gemm_bias_gelu(to_gpu(x), false, to_gpu(w), true, with_bias ? &bias_gpu : nullptr, pre_gpu, y_gpu);
    EXPECT_EQ(fused, expect_fused(dt, n)) << m << "x" << k << "x" << n;
    EXPECT_LT(rel_err(pre_gpu, pre), tol(dt)) << m << "x" << k << "x" << n;
    EXPECT_LT(rel_err(y_gpu, y), tol(dt)) << m << "x" << k << "x" << n;
  }
}

// Backward shapes beyond kShapes for the default (unfused-epilogue) path: a column count of 33
// packs (264) with rows not a multiple of 8, and n odd (unvectorised elementwise kernels).
constexpr std::tuple<int64_t, int64_t, int64_t> kBackwardShapes[] = {{300, 40, 264}, {29, 16, 45}};

TEST_P(CudaGemmGelu, BackwardMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, with_db] = GetParam();
  // "0": GEMM then gelu_backward and bias_grad_accumulate; "1" (the default): cuBLASLt's DGELU
  // epilogue then bias_grad_accumulate; "bgrad": DGELU_BGRAD (slower on H200), tested all the same
  // (and left on, as before, for the tests after).
  for (const char* epilogue : {"0", "1", "bgrad"}) {
    setenv("MT_GEMM_FUSE_DGELU", epilogue, 1);
    const bool opt_in = epilogue[0] != '0';
    std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes(std::begin(kShapes), std::end(kShapes));
    if (!opt_in) shapes.insert(shapes.end(), std::begin(kBackwardShapes), std::end(kBackwardShapes));
    for (auto [m, k, n] : shapes) {
      // fc2's dgrad: dy [m, k] times fc2's weight [k, n]; pre is fc1's output [m, n].
      Tensor dy = random_tensor({m, k}, dt, 4), w = random_tensor({k, n}, dt, 5, -0.1f, 0.1f);
      Tensor pre = random_tensor({m, n}, dt, 6, -3.0f, 3.0f);
      Tensor db = random_tensor({n}, DType::F32, 7), db_gpu = to_gpu(db);
      Tensor dpre = Tensor::empty({m, n}, dt);
      gemm_dgelu(dy, false, w, false, pre, dpre, with_db ? &db : nullptr);
      Tensor dpre_gpu = poisoned({m, n}, dt);
      const bool fused = gemm_dgelu(to_gpu(dy), false, to_gpu(w), false, to_gpu(pre), dpre_gpu,
                                    with_db ? &db_gpu : nullptr);
      EXPECT_EQ(fused, opt_in && expect_fused(dt, n)) << m << "x" << k << "x" << n << " epilogue " << epilogue;
      EXPECT_LT(rel_err(dpre_gpu, dpre), tol(dt)) << m << "x" << k << "x" << n << " epilogue " << epilogue;
      EXPECT_LT(rel_err(db_gpu, db), tol(dt)) << m << "x" << k << "x" << n << " epilogue " << epilogue;
    }
  }
}

// A linear layer's weight gradient (fp32, accumulated onto non-zero values) and bias gradient.
TEST_P(CudaGemmGelu, WgradBgradMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam().dt;
  // "0" (the default): the plain wgrad, then bias_grad_accumulate; "1": the BGRADB epilogue.
  for (const char* epilogue : {"0", "1"}) {
    setenv("MT_GEMM_FUSE_BGRAD", epilogue, 1);
    for (auto [N, in, out] : kShapes) {
      Tensor dy = random_tensor({N, out}, dt, 12), x = random_tensor({N, in}, dt, 13);
      Tensor dw = random_tensor({out, in}, DType::F32, 14), db = random_tensor({out}, DType::F32, 15);
      Tensor dw_gpu = to_gpu(dw), db_gpu = to_gpu(db);
      gemm_wgrad_bgrad(dy, x, dw, db);
      const bool fused = gemm_wgrad_bgrad(to_gpu(dy), to_gpu(x), dw_gpu, db_gpu);
      // Off, or fp32: never fused; on: always where every dimension is a multiple of 8 (other
      // shapes are cuBLASLt's choice).
      if (epilogue[0] == '0' || dt == DType::F32) {
        EXPECT_FALSE(fused) << N << "x" << in << "x" << out << " bgrad " << epilogue;
      } else if (N % 8 == 0 && in % 8 == 0 && out % 8 == 0) {
        EXPECT_TRUE(fused) << N << "x" << in << "x" << out << " bgrad " << epilogue;
      }
      // fp32 accumulation of exact products of half inputs: only summation order differs.
      EXPECT_LT(rel_err(dw_gpu, dw), 1e-4) << N << "x" << in << "x" << out << " bgrad " << epilogue;
      EXPECT_LT(rel_err(db_gpu, db), 1e-5) << N << "x" << in << "x" << out << " bgrad " << epilogue;
      // dw_beta 0 (a round's first gradient): a poisoned dw is overwritten, never read.
      Tensor dw0 = poisoned({out, in}, DType::F32);
      gemm_wgrad_bgrad(to_gpu(dy), to_gpu(x), dw0, db_gpu, 0.0f);
      gemm_wgrad_bgrad(dy, x, dw, db, 0.0f);
      EXPECT_LT(rel_err(dw0, dw), 1e-4) << N << "x" << in << "x" << out << " bgrad " << epilogue << " beta 0";
      EXPECT_LT(rel_err(db_gpu, db), 1e-5) << N << "x" << in << "x" << out << " bgrad " << epilogue << " beta 0";
    }
  }
  unsetenv("MT_GEMM_FUSE_BGRAD");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGemmGelu,
                         ::testing::Values(Case{DType::BF16, true}, Case{DType::BF16, false}, Case{DType::F16, true},
                                           Case{DType::F16, false}, Case{DType::F32, true}),
                         case_name);

// Exact GEMM results: a one-hot [16, 16] times a [16, 88] matrix whose entries, on a grid of
// step 1/8 over [-4.5, 3.5] (exact in bf16 and fp16), come out unchanged (fp32 accumulation).
constexpr int64_t kM = 16, kK = 16, kN = 88;
float grid_value(int64_t i) { return -4.5f + 0.125f * float(i % 65); }

// Per element, the fused result against tanh-GeLU (t) and erf-GeLU (e), where they differ by more
// than 1e-4: the summed distance to t must be well below the summed distance to e.
// One unit in the last place, relative, of the half dtypes.
double ulp(DType dt) { return dt == DType::BF16 ? 1.0 / 128 : 1.0 / 1024; }

// Only points where the two differ by more than 4 roundings of the output dtype (`rel`) count:
// elsewhere (most of x > 0) bf16 cannot tell them apart and its rounding is all one measures.
void expect_tanh_not_erf(const std::vector<float>& got, const std::vector<double>& x, double (*t)(double),
                         double (*e)(double), double rel) {
  double to_tanh = 0, to_erf = 0;
  int points = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(t(x[i]) - e(x[i])) < 4 * rel * std::fabs(t(x[i])) + 1e-5) continue;
    to_tanh += std::fabs(got[i] - t(x[i]));
    to_erf += std::fabs(got[i] - e(x[i]));
    ++points;
  }
  ASSERT_GT(points, 10);
  EXPECT_LT(to_tanh, 0.25 * to_erf) << "distance to tanh-GeLU " << to_tanh << ", to erf-GeLU " << to_erf << " over "
                                    << points << " points";
}

// Elementwise within ~one unit in the last place of the dtype (plus a little absolute slack for
// the far negative tail, where 1 + tanh cancels: fp16 dgelu at x = -3.5 differed by 1.3e-5 on an
// H200); reports the worst element.
void expect_same_function(const std::vector<float>& got, const std::vector<float>& want,
                          const std::vector<double>& x, DType dt) {
  const double rel = ulp(dt);
  double worst = 0;  // |got - want| / allowed
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = std::fabs(double(got[i]) - want[i]) / (rel * std::fabs(want[i]) + 2e-5);
    if (!(r <= worst)) worst = r, at = i;  // NaN counts as worst
  }
  EXPECT_LE(worst, 1.0) << "worst at x = " << x[at] << ": fused " << got[at] << ", unfused " << want[at];
}

class CudaGemmGeluFunction : public ::testing::TestWithParam<DType> {};

TEST_P(CudaGemmGeluFunction, ForwardEpilogueIsTanhGelu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  std::vector<float> onehot(kM * kK, 0.0f), wv(kN * kK);
  for (int64_t i = 0; i < kM; ++i) onehot[i * kK + i] = 1.0f;
  for (int64_t j = 0; j < kN; ++j)
    for (int64_t c = 0; c < kK; ++c) wv[j * kK + c] = grid_value(j * kK + c);
  Tensor x = to_gpu(from_vec(onehot, {kM, kK}, dt)), w = to_gpu(from_vec(wv, {kN, kK}, dt));
  Tensor bias = to_gpu(from_vec(std::vector<float>(kN, 0.0f), {kN}, dt));
  Tensor pre = poisoned({kM, kN}, dt), y = poisoned({kM, kN}, dt), y_unfused = poisoned({kM, kN}, dt);
  ASSERT_TRUE(gemm_bias_gelu(x, false, w, true, &bias, pre, y)) << "not fused: nothing to check";
  gelu_forward(pre, y_unfused);  // our CUDA kernel on the same pre-activation

  const auto got_pre = to_vec(to_host(pre)), got = to_vec(to_host(y)), unfused = to_vec(to_host(y_unfused));
  std::vector<double> xs(size_t(kM * kN));
  for (int64_t i = 0; i < kM; ++i)
    for (int64_t j = 0; j < kN; ++j) {
      xs[i * kN + j] = wv[j * kK + i];
      ASSERT_EQ(got_pre[i * kN + j], wv[j * kK + i]) << "pre-activation (aux) at " << i << ", " << j;
    }
  expect_tanh_not_erf(got, xs, gelu_tanh, gelu_erf, ulp(dt));
  expect_same_function(got, unfused, xs, dt);
}

TEST_P(CudaGemmGeluFunction, BackwardEpilogueIsTanhGeluDerivative) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  // "1": the DGELU epilogue (bias gradient by bias_grad_accumulate); "bgrad": DGELU_BGRAD.
  for (const char* epilogue : {"1", "bgrad"}) {
    setenv("MT_GEMM_FUSE_DGELU", epilogue, 1);
    const DType dt = GetParam();
    std::vector<float> onehot(kM * kK, 0.0f), prev(kM * kN);
    for (int64_t i = 0; i < kM; ++i) onehot[i * kK + i] = 1.0f;
    for (int64_t i = 0; i < kM * kN; ++i) prev[i] = grid_value(i);
    // dy W = 1 everywhere, so dpre = gelu'(pre) and db = its column sums.
    Tensor dy = to_gpu(from_vec(onehot, {kM, kK}, dt));
    Tensor w = to_gpu(from_vec(std::vector<float>(kK * kN, 1.0f), {kK, kN}, dt));
    Tensor pre = to_gpu(from_vec(prev, {kM, kN}, dt));
    Tensor db = to_gpu(from_vec(std::vector<float>(kN, 0.5f), {kN}, DType::F32));
    Tensor dpre = poisoned({kM, kN}, dt);
    ASSERT_TRUE(gemm_dgelu(dy, false, w, false, pre, dpre, &db)) << "not fused: nothing to check, " << epilogue;
    Tensor ones = to_gpu(from_vec(std::vector<float>(kM * kN, 1.0f), {kM, kN}, dt)), unfused = poisoned({kM, kN}, dt);
    gelu_backward(ones, pre, unfused);

    const auto got = to_vec(to_host(dpre)), want = to_vec(to_host(unfused)), got_db = to_vec(to_host(db));
    const std::vector<double> xs(prev.begin(), prev.end());
    expect_tanh_not_erf(got, xs, dgelu_tanh, dgelu_erf, ulp(dt));
    expect_same_function(got, want, xs, dt);
    for (int64_t j = 0; j < kN; ++j) {
      double sum = 0.5;
      for (int64_t i = 0; i < kM; ++i) sum += dgelu_tanh(prev[i * kN + j]);
      EXPECT_NEAR(got_db[j], sum, 1e-2 * std::fabs(sum) + 1e-3) << "bias grad column " << j << ", " << epilogue;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGemmGeluFunction, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(name_of(info.param)); });

TEST(CudaGemmGeluEdge, IsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t m = 1024, k = 768, n = 3072;
  Tensor x = to_gpu(random_tensor({m, k}, DType::BF16, 8)), w1 = to_gpu(random_tensor({n, k}, DType::BF16, 9));
  Tensor b1 = to_gpu(random_tensor({n}, DType::BF16, 10)), w2 = to_gpu(random_tensor({k, n}, DType::BF16, 11));
  Tensor pre[2], y[2];
  for (int r = 0; r < 2; ++r) {
    pre[r] = poisoned({m, n}, DType::BF16);
    y[r] = poisoned({m, n}, DType::BF16);
    gemm_bias_gelu(x, false, w1, true, &b1, pre[r], y[r]);
  }
  EXPECT_TRUE(same_bits(pre[0], pre[1]));
  EXPECT_TRUE(same_bits(y[0], y[1]));
  // "0": GEMM then gelu_backward and bias_grad_accumulate; "1": cuBLASLt's DGELU epilogue then
  // bias_grad_accumulate; "bgrad": its DGELU_BGRAD epilogue.
  for (const char* epilogue : {"0", "1", "bgrad"}) {
    setenv("MT_GEMM_FUSE_DGELU", epilogue, 1);
    Tensor dpre[2], db[2];
    for (int r = 0; r < 2; ++r) {
      dpre[r] = poisoned({m, n}, DType::BF16);
      db[r] = to_gpu(random_tensor({n}, DType::F32, 12));
      gemm_dgelu(x, false, w2, false, pre[0], dpre[r], &db[r]);
    }
    EXPECT_TRUE(same_bits(dpre[0], dpre[1])) << "epilogue " << epilogue;
    EXPECT_TRUE(same_bits(db[0], db[1])) << "epilogue " << epilogue;
    if (epilogue[0] == '0') {
      // dpre does not depend on whether a bias gradient is asked for, and the bias gradient is
      // bias_grad_accumulate's column sum of that stored dpre.
      Tensor dpre_plain = poisoned({m, n}, DType::BF16), db_plain = to_gpu(random_tensor({n}, DType::F32, 12));
      gemm_dgelu(x, false, w2, false, pre[0], dpre_plain, nullptr);
      bias_grad_accumulate(dpre_plain, db_plain);
      EXPECT_TRUE(same_bits(dpre[0], dpre_plain));
      EXPECT_TRUE(same_bits(db[0], db_plain));
    }
  }
  Tensor dw2[2], db2[2];
  for (int r = 0; r < 2; ++r) {
    dw2[r] = Tensor::zeros({n, k}, DType::F32, gpu());
    db2[r] = Tensor::zeros({n}, DType::F32, gpu());
    gemm_wgrad_bgrad(pre[r], x, dw2[r], db2[r]);
  }
  EXPECT_TRUE(same_bits(dw2[0], dw2[1]));
  EXPECT_TRUE(same_bits(db2[0], db2[1]));
}

}  // namespace
}  // namespace mt
