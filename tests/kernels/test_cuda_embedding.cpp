// Token + position embedding on CUDA against the CPU backend: forward with and without wpe, a
// vocabulary shard (tokens outside it contribute zero), backward accumulating into fp32 grads
// with many repeated tokens; and run-to-run bit reproducibility of the backward.
#include "kernels/embedding.h"

#include <random>

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

// ids in [lo, hi), skewed so some tokens repeat many times (like real text).
Tensor random_ids(int64_t B, int64_t T, int lo, int hi, uint32_t seed) {
  Tensor ids = Tensor::empty({B, T}, DType::I32);
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> any(lo, hi - 1), few(lo, lo + 3);
  for (int64_t i = 0; i < B * T; ++i) ids.data<int32_t>()[i] = (i % 3 == 0) ? few(gen) : any(gen);
  return ids;
}

struct EmbCase {
  DType dt;
  int64_t C;
  bool wpe;
  int64_t vocab_start;
};

class CudaEmbedding : public ::testing::TestWithParam<EmbCase> {};

TEST_P(CudaEmbedding, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, C, use_wpe, vs] = GetParam();
  const int64_t B = 3, T = 67, V = 50, Tmax = 80;
  Tensor ids = random_ids(B, T, 0, 120, 1);  // with vs = 40, rows 40..89 are this shard's
  Tensor wte = random_tensor({V, C}, dt, 2), wpe = random_tensor({Tmax, C}, dt, 3);
  Tensor wte_g = to_gpu(wte), wpe_g = to_gpu(wpe), ids_g = to_gpu(ids);
  Tensor out = Tensor::empty({B, T, C}, dt), out_g = poisoned({B, T, C}, dt);
  embedding_forward(ids, wte, use_wpe ? &wpe : nullptr, vs, out);
  embedding_forward(ids_g, wte_g, use_wpe ? &wpe_g : nullptr, vs, out_g);
  EXPECT_LT(rel_err(out_g, out), tol_for(dt, 1e-6));

  Tensor dout = random_tensor({B, T, C}, dt, 4);
  Tensor dwte = random_tensor({V, C}, DType::F32, 5), dwpe = random_tensor({Tmax, C}, DType::F32, 6);
  Tensor dwte_g = to_gpu(dwte), dwpe_g = to_gpu(dwpe);
  embedding_backward(dout, ids, vs, dwte, use_wpe ? &dwpe : nullptr);
  embedding_backward(to_gpu(dout), ids_g, vs, dwte_g, use_wpe ? &dwpe_g : nullptr);
  EXPECT_LT(rel_err(dwte_g, dwte), 1e-6);
  if (use_wpe) {
    EXPECT_LT(rel_err(dwpe_g, dwpe), 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaEmbedding,
                         ::testing::Values(EmbCase{DType::F32, 64, true, 0}, EmbCase{DType::F32, 37, false, 40},
                                           EmbCase{DType::BF16, 96, true, 40}, EmbCase{DType::F16, 300, true, 0},
                                           EmbCase{DType::BF16, 1000, false, 0}));

// A word that fills 40% of a batch (~820 occurrences: more than a block's threads, so the run's end
// takes several steps to find, and not a multiple of the 8-row load batches) sums its gradient in
// token order like the CPU: the same bits, for packed (768) and unpacked (771) rows.
TEST(CudaEmbeddingBackward, AFrequentWordMatchesTheCpuBitForBit) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 4, T = 512, V = 300;
  Tensor ids = Tensor::empty({B, T}, DType::I32);
  std::mt19937 gen(9);
  std::uniform_int_distribution<int> any(0, int(V) - 1), coin(0, 9);
  for (int64_t i = 0; i < B * T; ++i) ids.data<int32_t>()[i] = coin(gen) < 4 ? 7 : any(gen);
  for (int64_t C : {int64_t(768), int64_t(771)}) {
    Tensor dout = random_tensor({B, T, C}, DType::BF16, 10);
    Tensor dwte = random_tensor({V, C}, DType::F32, 11), dwte_g = to_gpu(dwte);
    embedding_backward(dout, ids, 0, dwte, nullptr);
    embedding_backward(to_gpu(dout), to_gpu(ids), 0, dwte_g, nullptr);
    EXPECT_TRUE(same_bits(dwte_g, dwte)) << "C = " << C;
  }
}

TEST(CudaEmbeddingBackward, IsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 4, T = 512, C = 256, V = 1000;
  Tensor ids = to_gpu(random_ids(B, T, 0, int(V), 7));
  Tensor dout = to_gpu(random_tensor({B, T, C}, DType::BF16, 8));
  Tensor dwte[2], dwpe[2];
  for (int r = 0; r < 2; ++r) {
    dwte[r] = Tensor::zeros({V, C}, DType::F32, gpu());
    dwpe[r] = Tensor::zeros({T, C}, DType::F32, gpu());
    embedding_backward(dout, ids, 0, dwte[r], &dwpe[r]);
  }
  EXPECT_TRUE(same_bits(dwte[0], dwte[1]));
  EXPECT_TRUE(same_bits(dwpe[0], dwpe[1]));
}

}  // namespace
}  // namespace mt
