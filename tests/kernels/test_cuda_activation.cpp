// GeLU and dropout on CUDA against the CPU backend, for each dtype and for lengths that take the
// vectorised and the scalar paths; dropout masks must agree element for element (both backends
// draw them from Philox), backward must apply the same mask, and p = 0 copies.
#include "kernels/activation.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

class CudaActivation : public ::testing::TestWithParam<DType> {};

TEST_P(CudaActivation, GeluForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  for (int64_t n : {int64_t(1), int64_t(1003), int64_t(4096 * 3)}) {
    Tensor x = random_tensor({n}, dt, 1, -4, 4), dy = random_tensor({n}, dt, 2);
    Tensor y = Tensor::empty({n}, dt), dx = Tensor::empty({n}, dt);
    gelu_forward(x, y);
    gelu_backward(dy, x, dx);
    Tensor xg = to_gpu(x), yg = poisoned({n}, dt), dxg = poisoned({n}, dt);
    gelu_forward(xg, yg);
    gelu_backward(to_gpu(dy), xg, dxg);
    EXPECT_LT(rel_err(yg, y), tol_for(dt)) << n;
    EXPECT_LT(rel_err(dxg, dx), tol_for(dt)) << n;
    Tensor inplace = to_gpu(dy);  // dx may alias dy
    gelu_backward(inplace, xg, inplace);
    EXPECT_TRUE(same_bits(inplace, dxg));
  }
}

TEST_P(CudaActivation, DropoutMatchesCpuMaskAndScale) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  const uint64_t seed = 1234, stream = 77;
  for (int64_t n : {int64_t(3), int64_t(1001), int64_t(1 << 14)}) {
    for (float p : {0.0f, 0.1f, 0.5f}) {
      Tensor x = random_tensor({n}, dt, 3), y = Tensor::empty({n}, dt);
      dropout_forward(x, y, p, seed, stream);
      Tensor yg = poisoned({n}, dt);
      dropout_forward(to_gpu(x), yg, p, seed, stream);
      EXPECT_LT(rel_err(yg, y), tol_for(dt, 1e-6)) << n << " p=" << p;
      auto got = to_vec(to_host(yg)), want = to_vec(y);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i] == 0.0f, want[i] == 0.0f) << "mask differs at " << i;

      Tensor dy = random_tensor({n}, dt, 4), dx = Tensor::empty({n}, dt);
      dropout_backward(dy, dx, p, seed, stream);
      Tensor dyg = to_gpu(dy);
      dropout_backward(dyg, dyg, p, seed, stream);  // in place
      EXPECT_LT(rel_err(dyg, dx), tol_for(dt, 1e-6)) << n << " p=" << p;
    }
  }
}

// At an element offset (not a multiple of 4, and past 2^32) both backends draw the same mask.
TEST_P(CudaActivation, DropoutAtAnOffsetMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  const uint64_t seed = 4321, stream = 78;
  const float p = 0.3f;
  for (uint64_t offset : {uint64_t(1), uint64_t(2), uint64_t(3), uint64_t(6), uint64_t(4097),
                          (uint64_t(1) << 32) + 5}) {
    for (int64_t n : {int64_t(1), int64_t(2), int64_t(5), int64_t(1001), int64_t(1 << 14)}) {
      Tensor x = random_tensor({n}, dt, 5, 0.5, 2), y = Tensor::empty({n}, dt);
      dropout_forward(x, y, p, seed, stream, {}, offset);
      Tensor yg = poisoned({n}, dt);
      dropout_forward(to_gpu(x), yg, p, seed, stream, {}, offset);
      EXPECT_LT(rel_err(yg, y), tol_for(dt, 1e-6)) << n << " offset=" << offset;
      auto got = to_vec(to_host(yg)), want = to_vec(y);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i] == 0.0f, want[i] == 0.0f) << "mask differs at " << i << " offset=" << offset;

      Tensor dy = random_tensor({n}, dt, 6), dx = Tensor::empty({n}, dt);
      dropout_backward(dy, dx, p, seed, stream, {}, offset);
      Tensor dyg = to_gpu(dy);
      dropout_backward(dyg, dyg, p, seed, stream, {}, offset);  // in place
      EXPECT_TRUE(same_bits(dyg, dx)) << n << " offset=" << offset;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaActivation, ::testing::Values(DType::F32, DType::BF16, DType::F16));

}  // namespace
}  // namespace mt
