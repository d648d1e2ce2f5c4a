#pragma once
// Shared plumbing for the CUDA kernels: storage-type dispatch (fp32 / bf16 / fp16 stored, fp32
// computed), 16-byte packed loads, warp and block reductions with a fixed order (so results are
// bit-reproducible), and launch helpers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/cuda/cuda_check.h"
#include "core/error.h"
#include "core/tensor.h"

namespace mt::cuda {

inline cudaStream_t stream_of(Stream s) { return static_cast<cudaStream_t>(s.handle); }

template <class T> struct TypeTag { using type = T; };

// Calls fn(TypeTag<T>{}) with T the device storage type of `dtype`.
template <class Fn>
decltype(auto) dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: return fn(TypeTag<float>{});
    case DType::BF16: return fn(TypeTag<__nv_bfloat16>{});
    case DType::F16: return fn(TypeTag<__half>{});
    default: break;
  }
  fail_check(__FILE__, __LINE__, "is_floating(dtype)", std::string(dtype_name(dtype)));
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// 16 bytes of T: one LDG.128/STG.128. Pointers must be 16-byte aligned (check with aligned16).
template <class T>
struct alignas(16) Pack {
  static constexpr int N = 16 / int(sizeof(T));
  T v[N];
};
template <class T> __device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <class T> __device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) {
  *reinterpret_cast<Pack<T>*>(p) = v;
}
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Butterfly reductions: every lane ends with the same value, summed in the same order.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); all threads get the result.
// `shared` holds 32 values. Fixed order: per warp, then warp results in warp order.
template <class V>
__device__ V block_sum(V v, V* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : V(0);
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

// Blocks for a grid-stride loop over `n` work items: enough to fill the device a few times
// over, never more than there is work for.
inline int grid_size(int64_t n, int block) {
  static thread_local int sms = 0;
  if (sms == 0) {
    int dev = 0;
    MT_CUDA_CHECK(cudaGetDevice(&dev));
    MT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  const int64_t want = ceil_div(n, block);
  const int64_t cap = int64_t(sms) * 8;
  return int(want < 1 ? 1 : (want < cap ? want : cap));
}

}  // namespace mt::cuda
