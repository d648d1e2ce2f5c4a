// gemm_bias_gelu, gemm_dgelu and gemm_wgrad_bgrad on the CPU are, bit for bit, the unfused sequences gemm.h
// defines them by (so a CPU model computes exactly what it did with the separate ops), and they
// report that nothing was fused.
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

class GemmGeluCpu : public ::testing::TestWithParam<DType> {};

TEST_P(GemmGeluCpu, ForwardIsGemmThenGelu) {
  const DType dt = GetParam();
  const int64_t m = 37, k = 24, n = 40;
  Tensor x = random_tensor({m, k}, dt, 1), w = random_tensor({n, k}, dt, 2, -0.5f, 0.5f);
  for (bool with_bias : {true, false}) {
    Tensor bias = random_tensor({n}, dt, 3);
    Tensor pre = Tensor::empty({m, n}, dt), y = Tensor::empty({m, n}, dt);
    EXPECT_FALSE(gemm_bias_gelu(x, false, w, true, with_bias ? &bias : nullptr, pre, y));

    Tensor pre_ref = Tensor::empty({m, n}, dt), y_ref = Tensor::empty({m, n}, dt);
    gemm(x, false, w, true, pre_ref, 1.0f, 0.0f, with_bias ? &bias : nullptr);
    gelu_forward(pre_ref, y_ref);
    EXPECT_TRUE(bitwise_equal(pre, pre_ref)) << "bias " << with_bias;
    EXPECT_TRUE(bitwise_equal(y, y_ref)) << "bias " << with_bias;
  }
}

TEST_P(GemmGeluCpu, BackwardIsGemmThenGeluBackwardThenBiasGrad) {
  const DType dt = GetParam();
  const int64_t m = 37, k = 24, n = 40;
  Tensor dy = random_tensor({m, k}, dt, 4), w = random_tensor({k, n}, dt, 5);
  Tensor pre = random_tensor({m, n}, dt, 6, -3.0f, 3.0f);
  for (bool with_db : {true, false}) {
    Tensor db = random_tensor({n}, DType::F32, 7), db_ref = random_tensor({n}, DType::F32, 7);
    Tensor dpre = Tensor::empty({m, n}, dt);
    EXPECT_FALSE(gemm_dgelu(dy, false, w, false, pre, dpre, with_db ? &db : nullptr));

    Tensor dpre_ref = Tensor::empty({m, n}, dt);
    gemm(dy, false, w, false, dpre_ref);
    gelu_backward(dpre_ref, pre, dpre_ref);
    if (with_db) bias_grad_accumulate(dpre_ref, db_ref);
    EXPECT_TRUE(bitwise_equal(dpre, dpre_ref)) << "db " << with_db;
    EXPECT_TRUE(bitwise_equal(db, db_ref)) << "db " << with_db;
  }
}

TEST_P(GemmGeluCpu, WgradBgradIsGemmThenBiasGrad) {
  const DType dt = GetParam();
  const int64_t N = 37, in = 24, out = 40;
  Tensor dy = random_tensor({N, out}, dt, 8), x = random_tensor({N, in}, dt, 9);
  Tensor dw = random_tensor({out, in}, DType::F32, 10), dw_ref = random_tensor({out, in}, DType::F32, 10);
  Tensor db = random_tensor({out}, DType::F32, 11), db_ref = random_tensor({out}, DType::F32, 11);
  EXPECT_FALSE(gemm_wgrad_bgrad(dy, x, dw, db));
  gemm(dy, true, x, false, dw_ref, 1.0f, 1.0f);
  bias_grad_accumulate(dy, db_ref);
  EXPECT_TRUE(bitwise_equal(dw, dw_ref));
  EXPECT_TRUE(bitwise_equal(db, db_ref));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemmGeluCpu, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace mt
