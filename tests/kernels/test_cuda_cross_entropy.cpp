// Fused softmax cross-entropy on CUDA against the CPU backend: losses and dlogits for each
// dtype, vocabulary padding (columns >= vocab get zero gradient), forward-only, dlogits
// overwriting the logits in place; and run-to-run bit reproducibility.
#include "kernels/cross_entropy.h"

#include <random>

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

Tensor random_targets(int64_t N, int64_t vocab, uint32_t seed) {
  Tensor t = Tensor::empty({N}, DType::I32);
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(0, int(vocab) - 1);
  for (int64_t i = 0; i < N; ++i) t.data<int32_t>()[i] = dist(gen);
  return t;
}

struct XentCase {
  DType dt;
  int64_t vocab, Vp;
};

class CudaCrossEntropy : public ::testing::TestWithParam<XentCase> {};

TEST_P(CudaCrossEntropy, LossesAndGradientsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, vocab, Vp] = GetParam();
  const int64_t N = 19;
  Tensor logits = random_tensor({N, Vp}, dt, 1, -6, 6), targets = random_targets(N, vocab, 2);
  Tensor dloss = random_tensor({N}, DType::F32, 3, 0, 1);
  Tensor losses = Tensor::empty({N}, DType::F32), dlogits = Tensor::empty({N, Vp}, dt);
  cross_entropy_forward_backward(logits, targets, vocab, losses, &dloss, &dlogits);

  Tensor logits_g = to_gpu(logits), targets_g = to_gpu(targets), dloss_g = to_gpu(dloss);
  Tensor losses_g = poisoned({N}, DType::F32), dlogits_g = poisoned({N, Vp}, dt);
  cross_entropy_forward_backward(logits_g, targets_g, vocab, losses_g, &dloss_g, &dlogits_g);
  EXPECT_LT(rel_err(losses_g, losses), 1e-5);
  EXPECT_LT(rel_err(dlogits_g, dlogits), tol_for(dt));

  Tensor losses_only = poisoned({N}, DType::F32);  // forward only
  cross_entropy_forward_backward(logits_g, targets_g, vocab, losses_only, nullptr, nullptr);
  EXPECT_TRUE(same_bits(losses_only, losses_g));

  Tensor inplace = to_gpu(logits), losses2 = poisoned({N}, DType::F32);  // dlogits aliases logits
  cross_entropy_forward_backward(inplace, targets_g, vocab, losses2, &dloss_g, &inplace);
  EXPECT_TRUE(same_bits(inplace, dlogits_g));
  EXPECT_TRUE(same_bits(losses2, losses_g));
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaCrossEntropy,
                         ::testing::Values(XentCase{DType::F32, 1000, 1000}, XentCase{DType::F32, 1001, 1024},
                                           XentCase{DType::BF16, 50257, 50304}, XentCase{DType::F16, 37, 40},
                                           XentCase{DType::BF16, 7, 7}));

}  // namespace
}  // namespace mt
