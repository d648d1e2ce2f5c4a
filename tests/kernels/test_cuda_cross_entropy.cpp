// Fused softmax cross-entropy on CUDA against the CPU backend: losses and dlogits for each
// dtype, vocabulary padding (columns >= vocab get zero gradient), forward-only, dlogits
// overwriting the logits in place; and run-to-run bit reproducibility. The cases cover both
// kernels: rows held in shared memory (up to ~227 KB of 16-byte packs) and the two-pass
// fallback for bigger rows, odd Vp and unaligned logits.
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
  float range = 6;  // logits uniform in [-range, range]
};

class CudaCrossEntropy : public ::testing::TestWithParam<XentCase> {};

TEST_P(CudaCrossEntropy, LossesAndGradientsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, vocab, Vp, range] = GetParam();
  const int64_t N = 19;
  Tensor logits = random_tensor({N, Vp}, dt, 1, -range, range), targets = random_targets(N, vocab, 2);
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

// Rows in shared memory: GPT-2's padded vocabulary in each dtype (fp32's 201 KB row is one block
// per SM), a peaked softmax whose small probabilities underflow, a one-pack row.
INSTANTIATE_TEST_SUITE_P(SharedMemoryRows, CudaCrossEntropy,
                         ::testing::Values(XentCase{DType::F16, 50257, 50304}, XentCase{DType::F32, 50257, 50304},
                                           XentCase{DType::BF16, 4000, 4096, 60}, XentCase{DType::F32, 3, 4}));

// The two-pass fallback: rows over the shared memory (fp32 256 KB; Llama-3's 128256 columns in
// bf16, 256.5 KB) and Vp not a multiple of 16 bytes (scalar loads).
INSTANTIATE_TEST_SUITE_P(TwoPassRows, CudaCrossEntropy,
                         ::testing::Values(XentCase{DType::F32, 65500, 65536}, XentCase{DType::BF16, 128256, 131072},
                                           XentCase{DType::F32, 50000, 50001}, XentCase{DType::F16, 1000, 1001, 60}));

// Logits 2 bytes past a 16-byte boundary (Vp a multiple of the pack): the scalar fallback, still
// right, and the gradient may overwrite them in place.
TEST(CudaCrossEntropyUnaligned, MatchesCpuAndRunsInPlace) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 5, vocab = 1000, Vp = 1024;
  const DType dt = DType::BF16;
  Tensor logits = random_tensor({N, Vp}, dt, 4, -6, 6), targets = random_targets(N, vocab, 5);
  Tensor dloss = random_tensor({N}, DType::F32, 6, 0, 1);
  Tensor losses = Tensor::empty({N}, DType::F32), dlogits = Tensor::empty({N, Vp}, dt);
  cross_entropy_forward_backward(logits, targets, vocab, losses, &dloss, &dlogits);

  Tensor buffer = Tensor::empty({N * Vp + 1}, dt, gpu());
  Tensor unaligned = buffer.flat_slice(1, N * Vp, {N, Vp});
  unaligned.copy_from(logits);
  Tensor targets_g = to_gpu(targets), dloss_g = to_gpu(dloss);
  Tensor losses_g = poisoned({N}, DType::F32), dlogits_g = poisoned({N, Vp}, dt);
  cross_entropy_forward_backward(unaligned, targets_g, vocab, losses_g, &dloss_g, &dlogits_g);
  EXPECT_LT(rel_err(losses_g, losses), 1e-5);
  EXPECT_LT(rel_err(dlogits_g, dlogits), tol_for(dt));

  Tensor losses2 = poisoned({N}, DType::F32);  // dlogits aliases the unaligned logits
  cross_entropy_forward_backward(unaligned, targets_g, vocab, losses2, &dloss_g, &unaligned);
  EXPECT_TRUE(same_bits(unaligned, dlogits_g));
  EXPECT_TRUE(same_bits(losses2, losses_g));
}

}  // namespace
}  // namespace mt
