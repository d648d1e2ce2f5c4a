// gemm and bias_grad_accumulate on CUDA against the CPU backend: every transpose combination,
// fp32/bf16/fp16 inputs, fp32 or input-dtype C, beta 0 (C poisoned with NaN: must not be read)
// and beta 1 (accumulation), with and without a bias of either dtype; odd shapes that defeat
// vectorised paths; run-to-run bit reproducibility; and the autotuner's timing runs, which must
// leave an accumulated C as one product would.
#include "kernels/gemm.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct GemmCase {
  DType ab, c;
  bool ta, tb;
  float beta;
  int bias;  // 0: none, 1: A's dtype, 2: fp32
};

std::string case_name(const ::testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& g = info.param;
  return std::string(name_of(g.ab)) + "_c" + name_of(g.c) + (g.ta ? "_T" : "_N") + (g.tb ? "T" : "N") +
         (g.beta != 0 ? "_beta1" : "_beta0") + (g.bias == 0 ? "" : g.bias == 1 ? "_bias" : "_bias32");
}

class CudaGemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(CudaGemm, MatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const GemmCase g = GetParam();
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{37, 53, 29}, {128, 256, 192}, {1, 64, 8}}) {
    Tensor a = random_tensor(g.ta ? Shape{k, m} : Shape{m, k}, g.ab, 1);
    Tensor b = random_tensor(g.tb ? Shape{n, k} : Shape{k, n}, g.ab, 2);
    Tensor bias = random_tensor({n}, g.bias == 2 ? DType::F32 : g.ab, 3);
    Tensor c_cpu = random_tensor({m, n}, g.c, 4);
    Tensor c_gpu = g.beta != 0 ? to_gpu(c_cpu) : poisoned({m, n}, g.c);
    Tensor bias_gpu = to_gpu(bias);
    gemm(a, g.ta, b, g.tb, c_cpu, 0.75f, g.beta, g.bias ? &bias : nullptr);
    gemm(to_gpu(a), g.ta, to_gpu(b), g.tb, c_gpu, 0.75f, g.beta, g.bias ? &bias_gpu : nullptr);
    // fp32 runs true fp32 on both sides (no TF32); half C adds its own rounding.
    const double tol = g.c == DType::F32 ? (g.ab == DType::F32 ? 1e-5 : 1e-4) : tol_for(g.c);
    EXPECT_LT(rel_err(c_gpu, c_cpu), tol) << m << "x" << n << "x" << k;
  }
}

std::vector<GemmCase> all_cases() {
  std::vector<GemmCase> cases;
  for (DType ab : {DType::F32, DType::BF16, DType::F16})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        cases.push_back({ab, DType::F32, ta, tb, 0.0f, 0});
        cases.push_back({ab, DType::F32, ta, tb, 1.0f, 0});  // (T, N, beta 1): weight grads into main grads
      }
  for (DType ab : {DType::BF16, DType::F16}) {
    cases.push_back({ab, ab, false, false, 0.0f, 0});
    cases.push_back({ab, ab, false, true, 1.0f, 0});
    cases.push_back({ab, ab, false, true, 0.0f, 1});  // the forward of a linear layer
    cases.push_back({ab, ab, false, true, 0.0f, 2});
  }
  cases.push_back({DType::F32, DType::F32, false, true, 0.0f, 2});
  cases.push_back({DType::F32, DType::F32, true, true, 1.0f, 2});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Combos, CudaGemm, ::testing::ValuesIn(all_cases()), case_name);

TEST(CudaGemmEdge, EmptyInnerDimensionGivesBetaCPlusBias) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Tensor a = Tensor::empty({5, 0}, DType::F32), b = Tensor::empty({0, 7}, DType::F32);
  Tensor bias = random_tensor({7}, DType::F32, 5);
  Tensor c = random_tensor({5, 7}, DType::F32, 6);
  Tensor c_gpu = to_gpu(c), bias_gpu = to_gpu(bias);
  gemm(a, false, b, false, c, 1.0f, 0.5f, &bias);
  gemm(to_gpu(a), false, to_gpu(b), false, c_gpu, 1.0f, 0.5f, &bias_gpu);
  EXPECT_LT(rel_err(c_gpu, c), 1e-6);
}

TEST(CudaGemmEdge, IsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Tensor a = to_gpu(random_tensor({256, 512}, DType::BF16, 7)), b = to_gpu(random_tensor({384, 512}, DType::BF16, 8));
  Tensor c1 = poisoned({256, 384}, DType::F32), c2 = poisoned({256, 384}, DType::F32);
  gemm(a, false, b, true, c1);
  gemm(a, false, b, true, c2);
  EXPECT_TRUE(same_bits(c1, c2));
}

// A weight-gradient-sized shape, where cuBLASLt's heuristic offers many algorithms: timing them
// (on the first call) must neither add into C nor leave it half-written, and later calls keep the
// chosen one (the same bits each time).
TEST(CudaGemmAutotune, TimingLeavesAnAccumulatedCAsOneProductWould) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  ASSERT_TRUE(gemm_autotune()) << "on by default (MT_GEMM_AUTOTUNE unset)";
  const int64_t m = 320, n = 448, k = 2048;
  Tensor dy = random_tensor({k, m}, DType::BF16, 11), x = random_tensor({k, n}, DType::BF16, 12);
  Tensor c = random_tensor({m, n}, DType::F32, 13);
  Tensor dy_gpu = to_gpu(dy), x_gpu = to_gpu(x), c1 = to_gpu(c), c2 = to_gpu(c);
  gemm(dy, true, x, false, c, 1.0f, 1.0f);
  gemm(dy_gpu, true, x_gpu, false, c1, 1.0f, 1.0f);  // builds and times the plan, then runs it
  gemm(dy_gpu, true, x_gpu, false, c2, 1.0f, 1.0f);
  EXPECT_LT(rel_err(c1, c), 1e-4);
  EXPECT_TRUE(same_bits(c1, c2));
}

class CudaBiasGrad : public ::testing::TestWithParam<DType> {};

TEST_P(CudaBiasGrad, MatchesCpuAndIsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  // 16-byte packs where C allows (768; 1000 ends in a part-filled block of 256 columns; 8 is a
  // single pack), one column per thread otherwise (5, 77).
  for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 5}, {300, 77}, {1000, 768}, {1037, 1000}, {3, 8}}) {
    Tensor dy = random_tensor({N, C}, dt, 9);
    Tensor db = random_tensor({C}, DType::F32, 10);
    Tensor db1 = to_gpu(db), db2 = to_gpu(db), dy_gpu = to_gpu(dy);
    bias_grad_accumulate(dy, db);
    bias_grad_accumulate(dy_gpu, db1);
    bias_grad_accumulate(dy_gpu, db2);
    EXPECT_LT(rel_err(db1, db), 1e-5) << N << "x" << C;
    EXPECT_TRUE(same_bits(db1, db2));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaBiasGrad, ::testing::Values(DType::F32, DType::BF16, DType::F16));

}  // namespace
}  // namespace mt
