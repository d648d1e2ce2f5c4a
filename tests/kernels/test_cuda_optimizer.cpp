// Fused AdamW on CUDA against the CPU backend: master, m, v and the rounded half copy, over
// lengths that take the float4 and the scalar paths, several steps with weight decay and a
// grad scale.
#include "kernels/optimizer.h"

#include "kernels/adamw_per_slice.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

class CudaAdamW : public ::testing::TestWithParam<int> {};  // 0: no param copy, 1: bf16, 2: fp16

TEST_P(CudaAdamW, ThreeStepsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int copy = GetParam();
  const DType pt = copy == 1 ? DType::BF16 : DType::F16;
  for (int64_t n : {int64_t(1), int64_t(1001), int64_t(4096)}) {
    Tensor master = random_tensor({n}, DType::F32, 1), m = Tensor::zeros({n}, DType::F32);
    Tensor v = Tensor::zeros({n}, DType::F32), param = Tensor::empty({n}, pt);
    Tensor master_g = to_gpu(master), m_g = to_gpu(m), v_g = to_gpu(v), param_g = poisoned({n}, pt);
    AdamWParams p;
    p.lr = 1e-3f;
    p.weight_decay = 0.1f;
    p.grad_scale = 0.5f;
    for (int step = 1; step <= 3; ++step) {
      p.step = step;
      Tensor grad = random_tensor({n}, DType::F32, uint32_t(10 + step));
      adamw_step(master, grad, m, v, copy ? &param : nullptr, p);
      adamw_step(master_g, to_gpu(grad), m_g, v_g, copy ? &param_g : nullptr, p);
    }
    EXPECT_LT(rel_err(master_g, master), 1e-6) << n;
    EXPECT_LT(rel_err(m_g, m), 1e-6) << n;
    EXPECT_LT(rel_err(v_g, v), 1e-6) << n;
    if (copy) {
      EXPECT_LT(rel_err(param_g, param), tol_for(pt)) << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ParamCopies, CudaAdamW, ::testing::Values(0, 1, 2));

// One launch over many ranges: more ranges than one launch's table holds (400 > 384), ranges of
// several blocks (20000 elements), unaligned offsets (scalar path), with and without decay --
// within the single-range test's tolerance of the CPU, and bit-identical to one single-range
// call per slice on the GPU.
TEST(CudaAdamWRanges, ManyRangesMatchTheCpuBitForBit) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  std::vector<AdamWRange> ranges;
  int64_t off = 0;
  for (int i = 0; i < 400; ++i) {
    const int64_t len = i % 50 == 7 ? 20000 : 1 + (i * 37) % 300;
    ranges.push_back({off, off + 3 * (i % 3 == 0), off + 3 * (i % 3 == 0), len, i % 4 != 1});
    off += len + (i % 5 == 2 ? 5 : 4);  // gaps wider than the master/state shift: ranges stay disjoint
  }
  const int64_t n = off + 3;
  Tensor master = random_tensor({n}, DType::F32, 1), m = random_tensor({n}, DType::F32, 2, 0, 1);
  Tensor v = random_tensor({n}, DType::F32, 3, 0, 1), param = random_tensor({n}, DType::BF16, 4);
  Tensor master_g = to_gpu(master), m_g = to_gpu(m), v_g = to_gpu(v), param_g = to_gpu(param);
  Tensor master_1 = to_gpu(master), m_1 = to_gpu(m), v_1 = to_gpu(v), param_1 = to_gpu(param);
  AdamWParams p{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0.5f};
  for (int step = 1; step <= 2; ++step) {
    p.step = step;
    Tensor grad = random_tensor({n}, DType::F32, uint32_t(10 + step), -2, 2);
    adamw_step_ranges(master, grad, m, v, &param, ranges, p);
    Tensor grad_g = to_gpu(grad);
    adamw_step_ranges(master_g, grad_g, m_g, v_g, &param_g, ranges, p);
    testing::adamw_step_per_slice(master_1, grad_g, m_1, v_1, param_1, ranges, p);
  }
  EXPECT_LT(rel_err(master_g, master), 1e-6);
  EXPECT_LT(rel_err(m_g, m), 1e-6);
  EXPECT_LT(rel_err(v_g, v), 1e-6);
  EXPECT_LT(rel_err(param_g, param), tol_for(DType::BF16));
  EXPECT_TRUE(same_bits(master_g, master_1));
  EXPECT_TRUE(same_bits(m_g, m_1));
  EXPECT_TRUE(same_bits(v_g, v_1));
  EXPECT_TRUE(same_bits(param_g, param_1));
}

}  // namespace
}  // namespace mt
