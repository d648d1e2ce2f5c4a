// SwiGLU on CUDA against the CPU backend, for each dtype, over widths F that take the 16-byte
// pack kernel (F a multiple of the pack width, aligned pointers) and the per-element kernel
// (odd F, F a multiple of 4 but not 8 for 16-bit types, a misaligned tensor), and a size that
// needs more than one grid pass. Outputs start as NaN so a skipped element fails.
#include "kernels/swiglu.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

void check(int64_t rows, int64_t F, DType dt, int64_t shift) {
  const Tensor x = random_tensor({rows, 2 * F}, dt, uint32_t(F), -6, 6), dy = random_tensor({rows, F}, dt, 2);
  Tensor y = Tensor::empty({rows, F}, dt), dx = Tensor::empty({rows, 2 * F}, dt);
  swiglu_forward(x, y);
  swiglu_backward(dy, x, dx);
  const Tensor xg = to_gpu_shifted(x, shift), dyg = to_gpu_shifted(dy, shift);
  const Tensor yg = poisoned_shifted({rows, F}, dt, shift), dxg = poisoned_shifted({rows, 2 * F}, dt, shift);
  swiglu_forward(xg, yg);
  swiglu_backward(dyg, xg, dxg);
  EXPECT_LT(rel_err(yg, y), tol_for(dt)) << name_of(dt) << " rows=" << rows << " F=" << F << " shift=" << shift;
  EXPECT_LT(rel_err(dxg, dx), tol_for(dt)) << name_of(dt) << " rows=" << rows << " F=" << F << " shift=" << shift;
}

class CudaSwiglu : public ::testing::TestWithParam<DType> {};

TEST_P(CudaSwiglu, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  for (int64_t F : {1, 3, 4, 8, 12, 64, 1000, 1001}) check(7, F, dt, 0);
  check(4096, 512, dt, 0);  // more items than one grid pass
}

TEST_P(CudaSwiglu, MisalignedTensorsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (int64_t F : {8, 64}) check(5, F, GetParam(), 1);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaSwiglu, ::testing::Values(DType::F32, DType::BF16, DType::F16));

}  // namespace
}  // namespace mt
