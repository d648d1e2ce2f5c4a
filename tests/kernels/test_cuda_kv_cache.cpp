// The key/value cache ops on CUDA against the CPU backend, for each dtype: append (bit for bit,
// untouched slots included) and attention over the cache with a different length per sequence,
// one token per step (decode) and several (a continuation), heads per group 1, 4, 7 and 12 (past
// the kernel's 8 heads per pass), head sizes 16, 64, 80 and 128, caches of one key chunk and of
// many (split over the keys and combined), and a cache of 20000 slots (wider chunks).
#include "kernels/kv_cache.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct Case {
  int64_t B, T, G, Q, D, S;
  std::vector<int32_t> start;  // per sequence; start + T <= S
};

const Case kCases[] = {
    {1, 1, 8, 4, 64, 384, {200}},               // Llama 3.2 1B decode: 6 chunks, 4 used
    {3, 1, 2, 7, 64, 64, {0, 17, 63}},          // Qwen 2.5 0.5B-like groups; one chunk
    {2, 1, 1, 12, 16, 130, {129, 64}},          // 12 heads per group; the last key of a chunk
    {2, 5, 4, 1, 128, 300, {0, 211}},           // multi-head, 5 tokens per step
    {2, 3, 2, 4, 80, 100, {40, 0}},             // head size 80
    {1, 1, 1, 2, 16, 20000, {19998}},            // 20000 slots: 128-key chunks
};

std::string name_of_dtype(const ::testing::TestParamInfo<DType>& info) { return name_of(info.param); }

Tensor starts(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::I32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

class CudaKVCache : public ::testing::TestWithParam<DType> {};

TEST_P(CudaKVCache, AppendAndAttentionMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  uint32_t seed = 10;
  for (const Case& c : kCases) {
    SCOPED_TRACE("B " + std::to_string(c.B) + " T " + std::to_string(c.T) + " G " + std::to_string(c.G) + " Q " +
                 std::to_string(c.Q) + " D " + std::to_string(c.D) + " S " + std::to_string(c.S));
    Tensor qkv = random_tensor({c.B, c.T, c.G, c.Q + 2, c.D}, dt, seed++, -2.0f, 2.0f);
    Tensor kc = random_tensor({c.B, c.S, c.G, c.D}, dt, seed++, -2.0f, 2.0f);
    Tensor vc = random_tensor({c.B, c.S, c.G, c.D}, dt, seed++);
    Tensor st = starts(c.start);
    Tensor kc_gpu = to_gpu(kc), vc_gpu = to_gpu(vc), st_gpu = to_gpu(st), qkv_gpu = to_gpu(qkv);
    kv_cache_append(qkv, st, kc, vc);
    kv_cache_append(qkv_gpu, st_gpu, kc_gpu, vc_gpu);
    EXPECT_TRUE(same_bits(kc_gpu, kc));
    EXPECT_TRUE(same_bits(vc_gpu, vc));

    AttentionConfig cfg{};
    cfg.n_heads = int(c.G * c.Q);
    cfg.head_dim = int(c.D);
    cfg.n_query_groups = int(c.G);
    Tensor out = Tensor::empty({c.B, c.T, c.G * c.Q, c.D}, dt);
    kv_cache_attention(qkv, kc, vc, st, out, cfg);
    Tensor out_gpu = poisoned_like(out);
    kv_cache_attention(qkv_gpu, kc_gpu, vc_gpu, st_gpu, out_gpu, cfg);
    EXPECT_LT(rel_err(out_gpu, out), tol_for(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKVCache, ::testing::Values(DType::F32, DType::BF16, DType::F16), name_of_dtype);

}  // namespace
}  // namespace mt
