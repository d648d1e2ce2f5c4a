// The three vocab-parallel cross-entropy passes over vocabulary shards, with the all-reduces
// done by hand, give the fused kernel's losses and logit gradients (padding included).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/rng.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/vocab_parallel_cross_entropy.h"

using namespace mt;

namespace {

void run_shards(int shards) {
  const int64_t N = 7, Vp = 48, vocab = 41, Vl = Vp / shards;
  Tensor logits = Tensor::empty({N, Vp}, DType::F32);
  fill_normal(logits, 3.0f, 11, 5);
  Tensor targets = Tensor::empty({N}, DType::I32), dloss = Tensor::empty({N}, DType::F32);
  for (int64_t n = 0; n < N; ++n) {
    targets.data<int32_t>()[n] = int32_t((n * 13 + 5) % vocab);
    dloss.data<float>()[n] = 0.1f * float(n + 1);
  }
  Tensor ref_loss = Tensor::empty({N}, DType::F32), ref_grad = Tensor::empty({N, Vp}, DType::F32);
  cross_entropy_forward_backward(logits, targets, vocab, ref_loss, &dloss, &ref_grad);

  // Each shard's columns as its own contiguous tensor.
  std::vector<Tensor> part(static_cast<size_t>(shards));
  for (int r = 0; r < shards; ++r) {
    part[size_t(r)] = Tensor::empty({N, Vl}, DType::F32);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t v = 0; v < Vl; ++v)
        part[size_t(r)].data<float>()[n * Vl + v] = logits.data<float>()[n * Vp + r * Vl + v];
  }
  Tensor mx = Tensor::empty({N}, DType::F32), gmax = Tensor::empty({N}, DType::F32);
  fill(gmax, -3e38f);
  for (int r = 0; r < shards; ++r) {
    vocab_parallel_ce_max(part[size_t(r)], r * Vl, vocab, mx);
    for (int64_t n = 0; n < N; ++n) gmax.data<float>()[n] = std::max(gmax.data<float>()[n], mx.data<float>()[n]);
  }
  Tensor se = Tensor::empty({N}, DType::F32), tl = Tensor::empty({N}, DType::F32);
  Tensor gse = Tensor::zeros({N}, DType::F32), gtl = Tensor::zeros({N}, DType::F32);
  for (int r = 0; r < shards; ++r) {
    vocab_parallel_ce_sum_exp(part[size_t(r)], targets, r * Vl, vocab, gmax, se, tl);
    for (int64_t n = 0; n < N; ++n) {
      gse.data<float>()[n] += se.data<float>()[n];
      gtl.data<float>()[n] += tl.data<float>()[n];
    }
  }
  for (int r = 0; r < shards; ++r) {
    Tensor loss = Tensor::empty({N}, DType::F32);
    vocab_parallel_ce_loss_grad(part[size_t(r)], targets, r * Vl, vocab, gmax, gse, gtl, loss, &dloss,
                                &part[size_t(r)]);  // in place
    for (int64_t n = 0; n < N; ++n) {
      EXPECT_NEAR(loss.data<float>()[n], ref_loss.data<float>()[n], 1e-5f) << "shard " << r << " row " << n;
      for (int64_t v = 0; v < Vl; ++v)
        EXPECT_NEAR(part[size_t(r)].data<float>()[n * Vl + v], ref_grad.data<float>()[n * Vp + r * Vl + v], 1e-6f)
            << "shard " << r << " row " << n << " col " << v;
    }
  }
}

}  // namespace

TEST(VocabParallelCrossEntropy, OneShardMatchesTheFusedKernel) { run_shards(1); }
TEST(VocabParallelCrossEntropy, TwoShardsMatchTheFusedKernel) { run_shards(2); }
TEST(VocabParallelCrossEntropy, FourShardsWithAPaddingOnlyShardMatch) { run_shards(4); }  // shard 3: ids 36..47, 41+ padding
