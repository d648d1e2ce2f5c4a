// The dispatchers check their arguments: a wrong shape, dtype or index is an internal error
// that names the op and the tensor (MT_CHECK: message, then abort).
#include <gtest/gtest.h>

#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/gemm.h"

namespace mt {
namespace {

class DispatchChecks : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }  // OpenMP threads exist
};

TEST_F(DispatchChecks, GemmRejectsMismatchedInnerDimensions) {
  Tensor a = Tensor::zeros({4, 3}, DType::F32), b = Tensor::zeros({5, 2}, DType::F32),
         c = Tensor::zeros({4, 2}, DType::F32);
  EXPECT_DEATH(gemm(a, false, b, false, c), "gemm: inner dimensions differ");
}

TEST_F(DispatchChecks, GemmRejectsMixedInputDtypes) {
  Tensor a = Tensor::zeros({2, 2}, DType::F32), b = Tensor::zeros({2, 2}, DType::BF16),
         c = Tensor::zeros({2, 2}, DType::F32);
  EXPECT_DEATH(gemm(a, false, b, false, c), "must share a dtype");
}

TEST_F(DispatchChecks, AttentionWantsFp32Lse) {
  Tensor qkv = Tensor::zeros({1, 4, 2, 3, 8}, DType::BF16), out = Tensor::zeros({1, 4, 2, 8}, DType::BF16);
  Tensor lse = Tensor::zeros({1, 2, 4}, DType::BF16);
  EXPECT_DEATH(attention_forward(qkv, out, lse, {2, 8}), "attention_forward: lse must be fp32");
}

TEST_F(DispatchChecks, CrossEntropyRejectsTargetsOutsideTheVocabulary) {
  Tensor logits = Tensor::zeros({1, 8}, DType::F32), targets = Tensor::zeros({1}, DType::I32),
         losses = Tensor::zeros({1}, DType::F32);
  targets.data<int32_t>()[0] = 6;  // a padding column
  EXPECT_DEATH(cross_entropy_forward_backward(logits, targets, 6, losses, nullptr, nullptr), "target 6 of row 0");
}

}  // namespace
}  // namespace mt
