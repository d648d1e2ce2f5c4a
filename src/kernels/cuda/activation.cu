// GeLU (tanh approximation) and inverted dropout, elementwise.
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//   dropout: y[i] = keep(i) ? x[i] / (1 - p) : 0, keep(i) = philox_uniform(seed, stream, offset + i) > p
// Memory-bound: gelu forward reads n and writes n elements, backward reads 2n and writes n,
// 16 bytes per thread per access when aligned. Dropout: a thread owns four consecutive global
// elements j = offset + i (one Philox block, whose four words are exactly philox_uniform of
// those four indices), so the mask is regenerated in backward instead of stored; it reads n and
// writes n. With offset % 4 != 0 the first and last blocks are partly another slice's.
#include "core/rng.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoeff = 0.044715f;

__device__ __forceinline__ float gelu(float v) {
  const float u = kSqrt2OverPi * (v + kGeluCoeff * v * v * v);
  return 0.5f * v * (1.0f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad(float v) {
  const float u = kSqrt2OverPi * (v + kGeluCoeff * v * v * v);
  const float t = tanhf(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCoeff * v * v);
  return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

template <class T, bool VEC>
__global__ void gelu_forward_kernel(const T* x, T* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if constexpr (VEC) {
    constexpr int N = Pack<T>::N;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n / N; i += stride) {
      Pack<T> p = load_pack(x + i * N);
#pragma unroll
      for (int k = 0; k < N; ++k) p.v[k] = from_float<T>(gelu(to_float(p.v[k])));
      store_pack(y + i * N, p);
    }
  } else {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
      y[i] = from_float<T>(gelu(to_float(x[i])));
  }
}

template <class T, bool VEC>
__global__ void gelu_backward_kernel(const T* dy, const T* x, T* dx, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if constexpr (VEC) {
    constexpr int N = Pack<T>::N;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n / N; i += stride) {
      const Pack<T> px = load_pack(x + i * N);
      Pack<T> pg = load_pack(dy + i * N);
#pragma unroll
      for (int k = 0; k < N; ++k) pg.v[k] = from_float<T>(to_float(pg.v[k]) * gelu_grad(to_float(px.v[k])));
      store_pack(dx + i * N, pg);
    }
  } else {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
      dx[i] = from_float<T>(to_float(dy[i]) * gelu_grad(to_float(x[i])));
  }
}

// Thread `g` handles global elements 4(first + g) .. 4(first + g) + 3, first = offset / 4, with
// the words of Philox block first + g; lanes outside [offset, offset + n) are skipped.
template <class T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, float p, float inv_keep, uint64_t seed, uint64_t stream,
                               uint64_t offset) {
  const uint64_t first = offset / 4, end = offset + uint64_t(n);
  const int64_t groups = int64_t((end + 3) / 4 - first);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    const uint64_t blk = first + uint64_t(g);
    uint32_t r[4];
    philox_block(seed, stream, blk, r);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint64_t j = blk * 4 + uint64_t(k);
      if (j < offset || j >= end) continue;
      const int64_t i = int64_t(j - offset);
      y[i] = from_float<T>(u32_to_uniform(r[k]) > p ? to_float(x[i]) * inv_keep : 0.0f);
    }
  }
}

void dropout(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, Stream s, uint64_t offset) {
  const int64_t n = x.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(x.device().index);
  if (p == 0.0f) {
    if (x.raw() != y.raw())
      MT_CUDA_CHECK(cudaMemcpyAsync(y.raw(), x.raw(), x.nbytes(), cudaMemcpyDeviceToDevice, stream_of(s)));
    return;
  }
  const float inv_keep = 1.0f / (1.0f - p);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    // n elements starting mid-block span at most n / 4 + 2 blocks.
    dropout_kernel<T><<<grid_size(ceil_div(n, 4) + 1, kBlock), kBlock, 0, stream_of(s)>>>(
        static_cast<const T*>(x.raw()), static_cast<T*>(y.raw()), n, p, inv_keep, seed, stream, offset);
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gelu_forward(const Tensor& x, const Tensor& y, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(x.device().index);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = static_cast<const T*>(x.raw());
    T* py = static_cast<T*>(y.raw());
    if (n % Pack<T>::N == 0 && aligned16(px) && aligned16(py))
      gelu_forward_kernel<T, true><<<grid_size(n / Pack<T>::N, kBlock), kBlock, 0, stream_of(s)>>>(px, py, n);
    else
      gelu_forward_kernel<T, false><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(px, py, n);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void gelu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(x.device().index);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pdy = static_cast<const T*>(dy.raw());
    const T* px = static_cast<const T*>(x.raw());
    T* pdx = static_cast<T*>(dx.raw());
    if (n % Pack<T>::N == 0 && aligned16(pdy) && aligned16(px) && aligned16(pdx))
      gelu_backward_kernel<T, true><<<grid_size(n / Pack<T>::N, kBlock), kBlock, 0, stream_of(s)>>>(pdy, px, pdx, n);
    else
      gelu_backward_kernel<T, false><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(pdy, px, pdx, n);
  });
  MT_CUDA_CHECK_LAUNCH();
}

// Inverted dropout is linear with a diagonal of 0 or 1/(1-p): backward applies the same mask to dy.
void dropout_forward(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, Stream s,
                     uint64_t offset) {
  dropout(x, y, p, seed, stream, s, offset);
}
void dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream, Stream s,
                      uint64_t offset) {
  dropout(dy, dx, p, seed, stream, s, offset);
}

}  // namespace mt::cuda
