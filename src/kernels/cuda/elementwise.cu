// Small whole-tensor ops: add, scale_, sum_squares, all_finite, cast, fill_normal, fill.
// All are memory-bound grid-stride loops; add/scale_/fill move 16 bytes per thread per
// iteration when the pointers are 16-byte aligned and numel is a multiple of the pack.
//   add:         reads 2n, writes n elements         scale_: reads n, writes n
//   sum_squares: reads n; pass 1 leaves one fp64 partial per block (a fixed number of blocks,
//                fixed order), pass 2 sums them in one block: bit-reproducible. Syncs the host.
//   all_finite:  reads n; a flag word any thread may set to 1 (no read-modify-write). Syncs.
//   cast:        reads n, writes n.   fill_normal: writes n (one Philox block per element).
#include "core/rng.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;

template <class T, bool VEC>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if constexpr (VEC) {
    constexpr int N = Pack<T>::N;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n / N; i += stride) {
      Pack<T> pa = load_pack(a + i * N), pb = load_pack(b + i * N), po;
#pragma unroll
      for (int k = 0; k < N; ++k) po.v[k] = from_float<T>(to_float(pa.v[k]) + to_float(pb.v[k]));
      store_pack(out + i * N, po);
    }
  } else {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
      out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
  }
}

template <class T, bool VEC>
__global__ void scale_kernel(T* x, float alpha, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if constexpr (VEC) {
    constexpr int N = Pack<T>::N;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n / N; i += stride) {
      Pack<T> p = load_pack(x + i * N);
#pragma unroll
      for (int k = 0; k < N; ++k) p.v[k] = from_float<T>(to_float(p.v[k]) * alpha);
      store_pack(x + i * N, p);
    }
  } else {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
      x[i] = from_float<T>(to_float(x[i]) * alpha);
  }
}

// Pass 1 of sum_squares: block b sums elements b*kBlock + t + k*stride (fixed for fixed n).
constexpr int kSumBlocks = 1024;
template <class T>
__global__ void sum_squares_partial_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[32];
  double acc = 0.0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = to_float(x[i]);
    acc += double(v * v);
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
__global__ void sum_partials_kernel(const double* partial, int count, double* out) {
  __shared__ double shared[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = acc;
}

template <class T>
__global__ void all_finite_kernel(const T* x, int64_t n, int* bad) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  bool ok = true;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) ok &= isfinite(to_float(x[i]));
  if (!ok) *bad = 1;
}

// Each warp adds its count to the total once (an exact integer sum in any order).
template <class T>
__global__ void count_zeros_kernel(const T* x, int64_t n, unsigned long long* total) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  unsigned long long c = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) c += to_float(x[i]) == 0.0f;
  for (int o = 16; o > 0; o /= 2) c += __shfl_down_sync(0xffffffffu, c, o);
  if ((threadIdx.x & 31) == 0 && c) atomicAdd(total, c);
}

template <class S, class D>
__global__ void cast_kernel(const S* src, D* dst, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = from_float<D>(to_float(src[i]));
}

template <class T>
__global__ void fill_normal_kernel(T* t, int64_t n, float std, uint64_t seed, uint64_t stream, int64_t offset) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    t[i] = from_float<T>(std * philox_normal(seed, stream, uint64_t(offset + i)));
}

template <class T>
__global__ void fill_kernel(T* t, int64_t n, T value) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) t[i] = value;
}

// Block (x, y) zeroes its share of range y, grid-striding over x.
__global__ void zero_ranges_kernel(float* t, const int64_t* ranges) {
  const int64_t off = ranges[2 * blockIdx.y], len = ranges[2 * blockIdx.y + 1];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < len; i += stride) t[off + i] = 0.0f;
}

}  // namespace

void zero_ranges(const Tensor& t, const Tensor& ranges, Stream s) {
  const int64_t n = ranges.size(0);
  MT_CHECK(n <= 65535, "zero_ranges: {} ranges, at most 65535", n);
  CudaDeviceGuard guard(t.device().index);
  // 32 blocks a range stride over the longest ones (a bias is a few thousand floats; the largest
  // non-matrix parameters, position embeddings, a few million).
  zero_ranges_kernel<<<dim3(32, unsigned(n)), kBlock, 0, stream_of(s)>>>(t.data<float>(), ranges.data<int64_t>());
  MT_CUDA_CHECK_LAUNCH();
}

void copy_2d(const Tensor& src, int64_t src_offset, int64_t src_pitch, const Tensor& dst, int64_t dst_offset,
             int64_t dst_pitch, int64_t width, int64_t rows, Stream s) {
  if (width == 0 || rows == 0) return;
  CudaDeviceGuard guard(dst.device().index);
  const size_t e = dtype_size(src.dtype());
  MT_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(dst.raw()) + size_t(dst_offset) * e, size_t(dst_pitch) * e,
                                  static_cast<const char*>(src.raw()) + size_t(src_offset) * e, size_t(src_pitch) * e,
                                  size_t(width) * e, size_t(rows), cudaMemcpyDeviceToDevice, stream_of(s)));
}

void add(const Tensor& a, const Tensor& b, const Tensor& out, Stream s) {
  const int64_t n = out.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(out.device().index);
  dispatch_float(out.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a.raw());
    const T* pb = static_cast<const T*>(b.raw());
    T* po = static_cast<T*>(out.raw());
    if (n % Pack<T>::N == 0 && aligned16(pa) && aligned16(pb) && aligned16(po))
      add_kernel<T, true><<<grid_size(n / Pack<T>::N, kBlock), kBlock, 0, stream_of(s)>>>(pa, pb, po, n);
    else
      add_kernel<T, false><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(pa, pb, po, n);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void scale_(const Tensor& x, float alpha, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(x.device().index);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(x.raw());
    if (n % Pack<T>::N == 0 && aligned16(p))
      scale_kernel<T, true><<<grid_size(n / Pack<T>::N, kBlock), kBlock, 0, stream_of(s)>>>(p, alpha, n);
    else
      scale_kernel<T, false><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(p, alpha, n);
  });
  MT_CUDA_CHECK_LAUNCH();
}

double sum_squares(const Tensor& x, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  CudaDeviceGuard guard(x.device().index);
  // The block count depends on n only, so the summation order is the same on every run.
  const int blocks = int(ceil_div(n, kBlock) < kSumBlocks ? ceil_div(n, kBlock) : kSumBlocks);
  Tensor scratch = Tensor::empty({blocks + 1}, DType::I64, x.device());  // fp64 partials + result
  double* partial = static_cast<double*>(scratch.raw());
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    sum_squares_partial_kernel<T><<<blocks, kBlock, 0, stream_of(s)>>>(static_cast<const T*>(x.raw()), n, partial);
  });
  MT_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, stream_of(s)>>>(partial, blocks, partial + blocks);
  MT_CUDA_CHECK_LAUNCH();
  double result = 0.0;
  MT_CUDA_CHECK(cudaMemcpyAsync(&result, partial + blocks, sizeof(double), cudaMemcpyDeviceToHost, stream_of(s)));
  MT_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  return result;
}

bool all_finite(const Tensor& x, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return true;
  CudaDeviceGuard guard(x.device().index);
  Tensor flag = Tensor::empty({1}, DType::I32, x.device());
  int* bad = static_cast<int*>(flag.raw());
  MT_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), stream_of(s)));
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    all_finite_kernel<T><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(static_cast<const T*>(x.raw()), n, bad);
  });
  MT_CUDA_CHECK_LAUNCH();
  int host_bad = 0;
  MT_CUDA_CHECK(cudaMemcpyAsync(&host_bad, bad, sizeof(int), cudaMemcpyDeviceToHost, stream_of(s)));
  MT_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  return host_bad == 0;
}

int64_t count_zeros(const Tensor& x, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return 0;
  CudaDeviceGuard guard(x.device().index);
  Tensor count = Tensor::empty({1}, DType::I64, x.device());
  auto* total = static_cast<unsigned long long*>(count.raw());
  MT_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(unsigned long long), stream_of(s)));
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    count_zeros_kernel<T><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(static_cast<const T*>(x.raw()), n, total);
  });
  MT_CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  MT_CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof(host), cudaMemcpyDeviceToHost, stream_of(s)));
  MT_CUDA_CHECK(cudaStreamSynchronize(stream_of(s)));
  return int64_t(host);
}

void cast(const Tensor& src, const Tensor& dst, Stream s) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(dst.device().index);
  if (src.dtype() == dst.dtype()) {
    if (src.raw() != dst.raw())
      MT_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream_of(s)));
    return;
  }
  dispatch_float(src.dtype(), [&](auto stag) {
    using S = typename decltype(stag)::type;
    dispatch_float(dst.dtype(), [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      cast_kernel<S, D><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(static_cast<const S*>(src.raw()),
                                                                         static_cast<D*>(dst.raw()), n);
    });
  });
  MT_CUDA_CHECK_LAUNCH();
}

void fill_normal(const Tensor& t, float std, uint64_t seed, uint64_t stream, int64_t index_offset, Stream s) {
  const int64_t n = t.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(t.device().index);
  dispatch_float(t.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_normal_kernel<T><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(static_cast<T*>(t.raw()), n, std, seed,
                                                                            stream, index_offset);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void fill(const Tensor& t, float value, Stream s) {
  const int64_t n = t.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(t.device().index);
  const int grid = grid_size(n, kBlock);
  switch (t.dtype()) {
    case DType::F32: fill_kernel<float><<<grid, kBlock, 0, stream_of(s)>>>(t.data<float>(), n, value); break;
    case DType::BF16:
      fill_kernel<__nv_bfloat16><<<grid, kBlock, 0, stream_of(s)>>>(static_cast<__nv_bfloat16*>(t.raw()), n,
                                                                     __float2bfloat16_rn(value));
      break;
    case DType::F16:
      fill_kernel<__half><<<grid, kBlock, 0, stream_of(s)>>>(static_cast<__half*>(t.raw()), n, __float2half_rn(value));
      break;
    case DType::I32: fill_kernel<int32_t><<<grid, kBlock, 0, stream_of(s)>>>(t.data<int32_t>(), n, int32_t(value)); break;
    case DType::I64: fill_kernel<int64_t><<<grid, kBlock, 0, stream_of(s)>>>(t.data<int64_t>(), n, int64_t(value)); break;
    case DType::U16: fill_kernel<uint16_t><<<grid, kBlock, 0, stream_of(s)>>>(t.data<uint16_t>(), n, uint16_t(value)); break;
  }
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
