// Fused AdamW on CUDA against the CPU backend: master, m, v and the rounded half copy, over
// lengths that take the float4 and the scalar paths, several steps with weight decay and a
// grad scale.
#include "kernels/optimizer.h"

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

}  // namespace
}  // namespace mt
