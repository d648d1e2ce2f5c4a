// The attention block kernels (attention_block.h) on CUDA against the CPU backend, for all five
// ops: a context-parallel rank's queries (load-balanced chunks 0 and 3 of 4) against its own and
// the other rank's key/value block, with documents, dropout (the same Philox mask on both
// backends, in a rank's global coordinates), fp32, bf16 and fp16 storage, GQA and MHA, head sizes
// filling 1..4 dims per lane; the other rank's block leaves some queries seeing no key (lse -inf).
// Both sides compute in fp32 from the same stored inputs and write fp32 results, so every
// dtype is held to 1e-4 relative (sums in another order); the layout ops to the same bits. And
// run-to-run bit reproducibility on the GPU (no atomics).
#include "kernels/attention_block.h"

#include <limits>
#include <ostream>
#include <string>

#include "attention_block_testing.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

AttentionMask mask_to_gpu(const AttentionMask& m) {
  AttentionMask g = m;
  g.q_pos = to_gpu(m.q_pos);
  g.k_pos = to_gpu(m.k_pos);
  if (m.q_doc.defined()) {
    g.q_doc = to_gpu(m.q_doc);
    g.k_doc = to_gpu(m.k_doc);
  }
  return g;
}

// rel_err where equal entries (the -inf lse of a query that sees no key on both sides) count as
// agreeing; a -inf on one side only gives inf or NaN, which fails.
double rel_err_or_equal(const Tensor& got, const Tensor& want) {
  auto g = to_vec(got.is_cuda() ? to_host(got) : got), w = to_vec(want.is_cuda() ? to_host(want) : want);
  for (size_t i = 0; i < g.size() && i < w.size(); ++i)
    if (g[i] == w[i]) g[i] = w[i] = 0.0f;
  return rel_err(from_vec(g, {int64_t(g.size())}), from_vec(w, {int64_t(w.size())}));
}

// after - before (an accumulator's increment), a CPU fp32 tensor; either may live on the GPU.
Tensor increment(const Tensor& after, const Tensor& before) {
  auto a = to_vec(after.is_cuda() ? to_host(after) : after);
  const auto b = to_vec(before.is_cuda() ? to_host(before) : before);
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] -= b[i];
  return from_vec(a, after.shape());
}

Tensor minus_inf(const Shape& shape) {
  return from_vec(std::vector<float>(size_t(shape_numel(shape)), -std::numeric_limits<float>::infinity()), shape);
}

struct BlockCase {
  DType dt;
  int64_t G, D;
  float p;
  bool docs;
  float softmax_scale = 0.0f;  // multi-latent attention's explicit scale (0: 1/sqrt(D))
};

std::string block_case_name(const BlockCase& c) {
  return std::string(name_of(c.dt)) + "_G" + std::to_string(c.G) + "_D" + std::to_string(c.D) +
         (c.p > 0 ? "_dropout" : "") + (c.docs ? "_docs" : "") + (c.softmax_scale > 0 ? "_scaled" : "");
}
std::string block_name(const ::testing::TestParamInfo<BlockCase>& info) { return block_case_name(info.param); }
void PrintTo(const BlockCase& c, std::ostream* os) { *os << block_case_name(c); }

class CudaAttentionBlock : public ::testing::TestWithParam<BlockCase> {};

TEST_P(CudaAttentionBlock, AllOpsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const BlockCase c = GetParam();
  // 4 chunks of 37 tokens (off the 32/64-row tiles): rank 0 holds 0..36 and 111..147, rank 1 37..110.
  const int64_t S = 148;
  const auto own = load_balanced_tokens(S, 2, 0), other = load_balanced_tokens(S, 2, 1);
  const BlockDims d{2, int64_t(own.size()), int64_t(other.size()), 8, c.G, c.D};
  AttentionConfig cfg = block_config(d, c.p, 77);
  cfg.batch_offset = 3;  // a data-parallel rank's samples [3, 5), a tensor-parallel rank's heads [8, 16) of 24
  cfg.head_offset = 8;
  cfg.total_heads = 24;
  cfg.softmax_scale = c.softmax_scale;
  const auto docs = c.docs ? random_documents(d.B, S, 4, 1) : std::vector<std::vector<int32_t>>{};
  const Shape qkv_own = d.qkv();  // both ranks hold Tq = Tk = 74 tokens

  // split_kv: the kv blocks of both ranks, on each backend.
  Tensor qkv = random_tensor(qkv_own, c.dt, 2, -2, 2), qkv_other = random_tensor(qkv_own, c.dt, 3, -2, 2);
  Tensor kv[2], kv_g[2];
  for (int k = 0; k < 2; ++k) {
    const Tensor& src = k == 0 ? qkv : qkv_other;
    kv[k] = Tensor::empty(d.kv(), c.dt);
    attention_split_kv(src, kv[k]);
    kv_g[k] = poisoned(d.kv(), c.dt);
    attention_split_kv(to_gpu(src), kv_g[k]);
    EXPECT_TRUE(same_bits(kv_g[k], kv[k])) << "split_kv " << k;
  }
  const AttentionMask mask[2] = {block_mask(d.B, own, own, docs, S), block_mask(d.B, own, other, docs, S)};
  Tensor qkv_g = to_gpu(qkv);

  // forward of each block, and merge.
  Tensor out_acc = Tensor::zeros(d.out(), DType::F32), lse_acc = minus_inf(d.lse());
  Tensor out_acc_g = to_gpu(out_acc), lse_acc_g = to_gpu(lse_acc);
  for (int k = 0; k < 2; ++k) {
    Tensor out = Tensor::empty(d.out(), DType::F32), lse = Tensor::empty(d.lse(), DType::F32);
    attention_block_forward(qkv, kv[k], mask[k], out, lse, cfg);
    Tensor out_g = poisoned(d.out(), DType::F32), lse_g = poisoned(d.lse(), DType::F32);
    attention_block_forward(qkv_g, kv_g[k], mask_to_gpu(mask[k]), out_g, lse_g, cfg);
    EXPECT_LT(rel_err(out_g, out), 1e-4) << "out, block " << k;
    EXPECT_LT(rel_err_or_equal(lse_g, lse), 1e-5) << "lse, block " << k;
    // Merge the CPU's block results on both backends (the same inputs).
    attention_lse_merge(out_acc, lse_acc, out, lse);
    attention_lse_merge(out_acc_g, lse_acc_g, to_gpu(out), to_gpu(lse));
    EXPECT_LT(rel_err(out_acc_g, out_acc), 1e-5) << "merged out, block " << k;
    EXPECT_LT(rel_err_or_equal(lse_acc_g, lse_acc), 1e-5) << "merged lse, block " << k;
  }

  // backward of each block from the merged out (in qkv's dtype) and lse, into accumulators that
  // start non-zero (the ops add): each side's increment is compared.
  Tensor out_m = from_vec(to_vec(out_acc), d.out(), c.dt), dout = random_tensor(d.out(), c.dt, 4);
  Tensor dq = random_tensor(d.out(), DType::F32, 5), dq_g = to_gpu(dq);
  for (int k = 0; k < 2; ++k) {
    const Tensor dq_before = to_host(dq_g), dkv_before = random_tensor(d.kv(), DType::F32, 6 + k);
    Tensor dq_cpu = from_vec(to_vec(dq_before), d.out()), dkv = from_vec(to_vec(dkv_before), d.kv());
    Tensor dkv_g = to_gpu(dkv_before);
    attention_block_backward(dout, qkv, kv[k], out_m, lse_acc, mask[k], dq_cpu, dkv, cfg);
    attention_block_backward(to_gpu(dout), qkv_g, kv_g[k], to_gpu(out_m), to_gpu(lse_acc), mask_to_gpu(mask[k]),
                             dq_g, dkv_g, cfg);
    EXPECT_LT(rel_err(increment(dq_g, dq_before), increment(dq_cpu, dq_before)), 1e-4) << "dq, block " << k;
    EXPECT_LT(rel_err(increment(dkv_g, dkv_before), increment(dkv, dkv_before)), 1e-4) << "dkv, block " << k;
    dq = dq_cpu;
    if (k == 0) {  // pack_grads of the same fp32 gradients: the same rounding, the same bits
      Tensor dqkv = Tensor::empty(qkv_own, c.dt), dqkv_g = poisoned(qkv_own, c.dt);
      attention_pack_grads(dq, dkv, dqkv);
      attention_pack_grads(to_gpu(dq), to_gpu(dkv), dqkv_g);
      EXPECT_TRUE(same_bits(dqkv_g, dqkv)) << "pack_grads";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttentionBlock,
                         ::testing::Values(BlockCase{DType::F32, 2, 64, 0.0f, true},
                                           BlockCase{DType::F32, 8, 32, 0.1f, true},
                                           BlockCase{DType::F32, 2, 16, 0.0f, false},
                                           BlockCase{DType::BF16, 2, 128, 0.1f, true},
                                           BlockCase{DType::BF16, 1, 80, 0.0f, false},
                                           BlockCase{DType::F16, 4, 16, 0.2f, true},
                                           BlockCase{DType::F32, 8, 32, 0.1f, true, 0.3f}),
                         block_name);

TEST(CudaAttentionBlockDeterminism, ForwardAndBackwardAreBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t S = 256;
  const auto own = load_balanced_tokens(S, 2, 1);
  const BlockDims d{2, int64_t(own.size()), int64_t(own.size()), 4, 2, 64};
  const AttentionConfig cfg = block_config(d, 0.1f, 5);
  const AttentionMask mask = mask_to_gpu(block_mask(d.B, own, own, random_documents(d.B, S, 3, 8), S));
  Tensor qkv = to_gpu(random_tensor(d.qkv(), DType::BF16, 9)), kv = poisoned(d.kv(), DType::BF16);
  attention_split_kv(qkv, kv);
  Tensor dout = to_gpu(random_tensor(d.out(), DType::BF16, 10));
  Tensor out[2], lse[2], dq[2], dkv[2];
  for (int r = 0; r < 2; ++r) {
    out[r] = poisoned(d.out(), DType::F32);
    lse[r] = poisoned(d.lse(), DType::F32);
    attention_block_forward(qkv, kv, mask, out[r], lse[r], cfg);
    Tensor out_bf16 = to_gpu(from_vec(to_vec(to_host(out[r])), d.out(), DType::BF16));
    dq[r] = to_gpu(Tensor::zeros(d.out(), DType::F32));
    dkv[r] = to_gpu(Tensor::zeros(d.kv(), DType::F32));
    attention_block_backward(dout, qkv, kv, out_bf16, lse[r], mask, dq[r], dkv[r], cfg);
  }
  EXPECT_TRUE(same_bits(out[0], out[1]));
  EXPECT_TRUE(same_bits(lse[0], lse[1]));
  EXPECT_TRUE(same_bits(dq[0], dq[1]));
  EXPECT_TRUE(same_bits(dkv[0], dkv[1]));
}

}  // namespace
}  // namespace mt
