// The CUDA backend's core plumbing: device tensors, copies both ways, zeroing, and the caching
// allocator (reuse without new cudaMalloc, in-use and peak accounting).
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

TEST(CudaBackend, DeviceCountIsNonNegativeAndInitIsIdempotent) {
  EXPECT_GE(cuda_device_count(), 0);
  cuda_init_backend();
  cuda_init_backend();
}

TEST(CudaBackend, CopiesRoundTripAndZeroFills) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Tensor host = random_tensor({37, 11}, dt, 1);
    Tensor dev = to_gpu(host);
    EXPECT_TRUE(dev.is_cuda());
    Tensor dev2 = Tensor::empty({37, 11}, dt, gpu());
    dev2.copy_from(dev);  // device to device
    EXPECT_TRUE(same_bits(to_host(dev2), host)) << name_of(dt);
    dev2.narrow0(3, 5).zero_();
    auto v = to_vec(to_host(dev2)), h = to_vec(host);
    for (int64_t i = 0; i < 37 * 11; ++i) {
      const bool zeroed = i >= 3 * 11 && i < 8 * 11;
      EXPECT_EQ(v[size_t(i)], zeroed ? 0.0f : h[size_t(i)]) << i;
    }
  }
  Tensor z = Tensor::zeros({1000}, DType::I32, gpu());
  Tensor zh = to_host(z);
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(zh.data<int32_t>()[i], 0);
}

TEST(CudaBackend, AllocatorReusesBlocksAndTracksPeak) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const size_t base = cuda_bytes_in_use(0);
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({1 << 20}, DType::F32, gpu());  // 4 MiB
    first = a.raw();
    EXPECT_GE(cuda_bytes_in_use(0), base + (size_t(4) << 20));
    EXPECT_GE(cuda_peak_bytes(0), cuda_bytes_in_use(0));
  }
  EXPECT_EQ(cuda_bytes_in_use(0), base);
  const size_t reserved = cuda_reserved_bytes(0);
  {
    Tensor b = Tensor::empty({1 << 20}, DType::F32, gpu());  // the same size class: the cached block
    EXPECT_EQ(b.raw(), first);
    EXPECT_EQ(cuda_reserved_bytes(0), reserved);
  }
  cuda_reset_peak_bytes(0);
  EXPECT_EQ(cuda_peak_bytes(0), cuda_bytes_in_use(0));
}

}  // namespace
}  // namespace mt
