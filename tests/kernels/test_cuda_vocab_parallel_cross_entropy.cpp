// The CUDA vocab-parallel cross-entropy passes against the CPU ones, per shard (the all-reduces
// between passes done by hand on the host), fp32 and bf16 logits.
#include <gtest/gtest.h>

#include <algorithm>

#include "kernels/vocab_parallel_cross_entropy.h"
#include "test_cuda_common.h"

using namespace mt;
using namespace mt::cuda_testing;

TEST(CudaVocabParallelCrossEntropy, ShardsMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : {DType::F32, DType::BF16}) {
    const int64_t N = 9, Vl = 300, vocab = 1000;  // 4 shards of 300 columns: the last is partly padding
    for (int64_t start : {0, 600, 900}) {
      Tensor logits32 = Tensor::empty({N, Vl}, DType::F32);
      fill_normal(logits32, 2.0f, 3, uint64_t(start));
      Tensor logits = Tensor::empty({N, Vl}, dt);
      cast(logits32, logits);
      Tensor targets = Tensor::empty({N}, DType::I32), dloss = Tensor::empty({N}, DType::F32);
      for (int64_t n = 0; n < N; ++n) {
        targets.data<int32_t>()[n] = int32_t((n * 97 + start) % vocab);
        dloss.data<float>()[n] = 0.5f + float(n);
      }
      // Pretend the other shards contributed: a global max a bit above ours, sums a bit larger.
      Tensor mx = Tensor::empty({N}, DType::F32), se = Tensor::empty({N}, DType::F32),
             tl = Tensor::empty({N}, DType::F32), loss = Tensor::empty({N}, DType::F32);
      Tensor grad = Tensor::empty({N, Vl}, dt);
      vocab_parallel_ce_max(logits, start, vocab, mx);
      Tensor gmx = to_gpu(logits), gm = poisoned({N}, DType::F32);
      vocab_parallel_ce_max(gmx, start, vocab, gm);
      EXPECT_TRUE(same_bits(gm, mx)) << dtype_name(dt) << " start " << start;
      for (int64_t n = 0; n < N; ++n) mx.data<float>()[n] += 0.25f;
      Tensor gmax = to_gpu(mx);
      vocab_parallel_ce_sum_exp(logits, targets, start, vocab, mx, se, tl);
      Tensor gse = poisoned({N}, DType::F32), gtl = poisoned({N}, DType::F32), gt = to_gpu(targets);
      vocab_parallel_ce_sum_exp(gmx, gt, start, vocab, gmax, gse, gtl);
      EXPECT_LT(rel_err(gse, se), 1e-5) << dtype_name(dt) << " start " << start;
      EXPECT_TRUE(same_bits(gtl, tl));
      for (int64_t n = 0; n < N; ++n) se.data<float>()[n] += 3.0f;
      Tensor gse2 = to_gpu(se);
      vocab_parallel_ce_loss_grad(logits, targets, start, vocab, mx, se, tl, loss, &dloss, &grad);
      Tensor gloss = poisoned({N}, DType::F32), ggrad = poisoned({N, Vl}, dt), gdl = to_gpu(dloss);
      vocab_parallel_ce_loss_grad(gmx, gt, start, vocab, gmax, gse2, gtl, gloss, &gdl, &ggrad);
      EXPECT_LT(rel_err(gloss, loss), 1e-6) << dtype_name(dt) << " start " << start;
      EXPECT_LT(rel_err(ggrad, grad), tol_for(dt)) << dtype_name(dt) << " start " << start;
    }
  }
}
