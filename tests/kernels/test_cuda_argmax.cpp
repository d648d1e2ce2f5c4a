// argmax_rows on CUDA against the CPU backend: rows wider than a block (Llama 3's 128256
// columns), ties (random values drawn from few levels), padding past n_valid, each dtype.
#include "kernels/argmax.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

TEST(CudaArgmax, MatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t V : {7, 1000, 128256}) {
      const int64_t N = 5, valid = V > 7 ? V - 3 : V;
      std::vector<float> v = random_vec(size_t(N * V), uint32_t(V));
      for (auto& x : v) x = std::round(x * 8.0f);  // 17 levels: many ties
      Tensor logits = from_vec(v, {N, V}, dt);
      Tensor want = Tensor::empty({N}, DType::I32), got = Tensor::empty({N}, DType::I32, gpu());
      argmax_rows(logits, valid, want);
      argmax_rows(to_gpu(logits), valid, got);
      EXPECT_TRUE(same_bits(got, want)) << name_of(dt) << " V " << V;
    }
  }
}

}  // namespace
}  // namespace mt
