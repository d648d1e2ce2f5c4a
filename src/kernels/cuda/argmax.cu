// argmax.h on CUDA: one block per row. Each thread keeps the best (value, column) of the columns
// it strides over; warps and then the block reduce the pairs, a larger value or an equal value
// at a smaller column winning, so the first maximum is found whatever the order of the steps.
#include "kernels/cuda/argmax.h"
#include "kernels/cuda/common.cuh"

namespace mt::cuda {
namespace {

constexpr int kBlock = 1024;

struct Best {
  float v;
  int32_t c;
};

__device__ __forceinline__ Best better(Best a, Best b) {
  return (b.v > a.v || (b.v == a.v && b.c < a.c)) ? b : a;
}

__device__ __forceinline__ Best warp_best(Best x) {
  for (int o = 16; o > 0; o >>= 1) {
    Best y{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.c, o)};
    x = better(x, y);
  }
  return x;
}

template <class T>
__global__ void __launch_bounds__(kBlock) argmax_kernel(const T* logits, int64_t V, int64_t n_valid, int32_t* out) {
  __shared__ Best partial[32];
  const T* x = logits + int64_t(blockIdx.x) * V;
  Best b{-INFINITY, INT32_MAX};
  for (int64_t c = threadIdx.x; c < n_valid; c += blockDim.x) {
    const float v = to_float(x[c]);
    if (v > b.v) b = {v, int32_t(c)};  // columns ascend per thread: the first maximum stays
  }
  b = warp_best(b);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = b;
  __syncthreads();
  if (warp == 0) {
    b = lane < int(blockDim.x >> 5) ? partial[lane] : Best{-INFINITY, INT32_MAX};
    b = warp_best(b);
    if (lane == 0) out[blockIdx.x] = b.c == INT32_MAX ? 0 : b.c;  // all NaN: column 0, as the CPU
  }
}

}  // namespace

void argmax_rows(const Tensor& logits, int64_t n_valid, const Tensor& out, Stream s) {
  const int64_t N = logits.size(0);
  if (N == 0) return;
  CudaDeviceGuard guard(logits.device().index);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    argmax_kernel<T><<<unsigned(N), kBlock, 0, stream_of(s)>>>(static_cast<const T*>(logits.raw()), logits.size(1),
                                                                n_valid, out.data<int32_t>());
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
