// MoE token permutation on CUDA (kernels/moe_permute.h): row gathers and scatters over a routing
// plan, memory-bound. Each op reads and writes its [R, C] and [N, C] rows once; dprobs reads a
// token's dout row once per choice (k times, mostly from L2).
//
// A block walks rows (grid-stride); its threads walk a row's units: a 16-byte pack (4 fp32 or
// 8 bf16/fp16 values) when every row starts on a 16-byte boundary (C a multiple of the pack
// width and 16-byte aligned base pointers), else one element. Each output row is written by one
// block and each dprobs value by one warp, so there are no atomics and results do not depend on
// the grid size. Sums over a token's choices run in slot order s = 0..k-1 in fp32 with one final
// rounding, like the CPU's: permute, permute_backward and dy are bit-identical to the CPU path;
// unpermute's products are fused multiply-adds (the CPU's compiler may or may not fuse), and
// dprobs is a warp reduction in a fixed order (lane-strided partial sums, then a butterfly), so
// both can differ from the CPU in the last bits but are reproducible run to run.
#include <initializer_list>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kRowBlock = 128;   // threads over one row's units
constexpr int kWarpBlock = 256;  // dprobs: 8 warps, one (token, slot) pair each

// Values per unit: a pack or one element.
template <class T, bool VEC> constexpr int kUnit = VEC ? Pack<T>::N : 1;

template <class T, bool VEC>
__device__ __forceinline__ void load_unit(const T* p, float* f) {
  if constexpr (VEC) {
    const Pack<T> v = load_pack(p);
#pragma unroll
    for (int i = 0; i < Pack<T>::N; ++i) f[i] = to_float(v.v[i]);
  } else {
    f[0] = to_float(*p);
  }
}
template <class T, bool VEC>
__device__ __forceinline__ void store_unit(T* p, const float* f) {
  if constexpr (VEC) {
    Pack<T> v;
#pragma unroll
    for (int i = 0; i < Pack<T>::N; ++i) v.v[i] = from_float<T>(f[i]);
    store_pack(p, v);
  } else {
    *p = from_float<T>(f[0]);
  }
}

// out[r] = x[row_source[r] / k], or zero bytes for padding rows. A pure copy, so it moves raw
// units U (uint4: 16 bytes; else an integer of the element's size); W units per row.
template <class U>
__global__ void permute_kernel(const U* x, const int32_t* row_source, int topk, U* out, int64_t R, int64_t W) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t slot = row_source[r];
    U* o = out + r * W;
    if (slot < 0) {
      for (int64_t j = threadIdx.x; j < W; j += blockDim.x) o[j] = U{};
    } else {
      const U* src = x + int64_t(slot / topk) * W;
      for (int64_t j = threadIdx.x; j < W; j += blockDim.x) o[j] = src[j];
    }
  }
}

// dx[t] = sum_s dout[row_map[t k + s]] over the mapped choices.
template <class T, bool VEC>
__global__ void permute_backward_kernel(const T* dout, const int32_t* row_map, int topk, T* dx, int64_t N,
                                        int64_t C) {
  constexpr int U = kUnit<T, VEC>;
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    const int32_t* map = row_map + t * topk;
    for (int64_t c = int64_t(threadIdx.x) * U; c < C; c += int64_t(blockDim.x) * U) {
      float acc[U], v[U];
#pragma unroll
      for (int i = 0; i < U; ++i) acc[i] = 0.0f;
      for (int s = 0; s < topk; ++s) {
        const int32_t r = map[s];
        if (r < 0) continue;
        load_unit<T, VEC>(dout + int64_t(r) * C + c, v);
#pragma unroll
        for (int i = 0; i < U; ++i) acc[i] += v[i];
      }
      store_unit<T, VEC>(dx + t * C + c, acc);
    }
  }
}

// out[t] = sum_s probs[t, s] y[row_map[t k + s]].
template <class T, bool VEC>
__global__ void unpermute_kernel(const T* y, const int32_t* row_map, const float* probs, int topk, T* out,
                                 int64_t N, int64_t C) {
  constexpr int U = kUnit<T, VEC>;
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    const int32_t* map = row_map + t * topk;
    const float* p = probs + t * topk;
    for (int64_t c = int64_t(threadIdx.x) * U; c < C; c += int64_t(blockDim.x) * U) {
      float acc[U], v[U];
#pragma unroll
      for (int i = 0; i < U; ++i) acc[i] = 0.0f;
      for (int s = 0; s < topk; ++s) {
        const int32_t r = map[s];
        if (r < 0) continue;
        const float w = p[s];
        load_unit<T, VEC>(y + int64_t(r) * C + c, v);
#pragma unroll
        for (int i = 0; i < U; ++i) acc[i] = __fmaf_rn(w, v[i], acc[i]);
      }
      store_unit<T, VEC>(out + t * C + c, acc);
    }
  }
}

// dy[r] = probs[slot] dout[slot / k] for slot = row_source[r]; 0 for padding rows.
template <class T, bool VEC>
__global__ void unpermute_backward_dy_kernel(const T* dout, const int32_t* row_source, const float* probs, int topk,
                                             T* dy, int64_t R, int64_t C) {
  constexpr int U = kUnit<T, VEC>;
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t slot = row_source[r];
    const float w = slot < 0 ? 0.0f : probs[slot];
    const T* d = slot < 0 ? nullptr : dout + int64_t(slot / topk) * C;
    for (int64_t c = int64_t(threadIdx.x) * U; c < C; c += int64_t(blockDim.x) * U) {
      float v[U];
      if (d) {
        load_unit<T, VEC>(d + c, v);
#pragma unroll
        for (int i = 0; i < U; ++i) v[i] *= w;
      } else {
#pragma unroll
        for (int i = 0; i < U; ++i) v[i] = 0.0f;
      }
      store_unit<T, VEC>(dy + r * C + c, v);
    }
  }
}

// dprobs[i] = <dout[i / k], y[row_map[i]]> (0 when dropped): one warp per pair i = t k + s.
// Lane l sums units l, l + 32, ... in order; warp_sum then adds the lanes in a fixed order.
template <class T, bool VEC>
__global__ void unpermute_backward_dprobs_kernel(const T* dout, const T* y, const int32_t* row_map, int topk,
                                                 float* dprobs, int64_t pairs, int64_t C) {
  constexpr int U = kUnit<T, VEC>;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; i < pairs; i += warps) {
    const int32_t r = row_map[i];  // the same for the whole warp
    float acc = 0.0f;
    if (r >= 0) {
      const T* d = dout + (i / topk) * C;
      const T* yr = y + int64_t(r) * C;
      for (int64_t c = int64_t(lane) * U; c < C; c += 32 * U) {
        float dv[U], yv[U];
        load_unit<T, VEC>(d + c, dv);
        load_unit<T, VEC>(yr + c, yv);
#pragma unroll
        for (int k = 0; k < U; ++k) acc = __fmaf_rn(dv[k], yv[k], acc);
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) dprobs[i] = acc;
  }
}

// Calls fn(T*, std::bool_constant<VEC>) with T the storage type of `dtype` and VEC whether rows
// of C values at all of `ptrs` can move in 16-byte packs.
template <class Fn>
void dispatch_rows(DType dtype, int64_t C, std::initializer_list<const void*> ptrs, Fn&& fn) {
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    bool vec = C % Pack<T>::N == 0;
    for (const void* p : ptrs) vec = vec && aligned16(p);
    if (vec)
      fn(static_cast<T*>(nullptr), std::true_type{});
    else
      fn(static_cast<T*>(nullptr), std::false_type{});
  });
}

// Blocks for a grid-stride loop over `rows` rows, one block per row at a time.
int row_grid(int64_t rows) { return grid_size(rows, 1); }

template <class U>
void launch_permute(const Tensor& x, const int32_t* src, int topk, const Tensor& out, int64_t W, cudaStream_t st) {
  const int64_t R = out.size(0);
  permute_kernel<U><<<row_grid(R), kRowBlock, 0, st>>>(static_cast<const U*>(x.raw()), src, topk,
                                                        static_cast<U*>(out.raw()), R, W);
}

}  // namespace

void moe_permute(const Tensor& x, const Tensor& row_source, int topk, const Tensor& out, Stream s) {
  const int64_t R = out.size(0), row_bytes = out.size(1) * int64_t(dtype_size(out.dtype()));
  if (R == 0 || row_bytes == 0) return;
  CudaDeviceGuard guard(out.device().index);
  const int32_t* src = row_source.data<int32_t>();
  const cudaStream_t st = stream_of(s);
  if (row_bytes % 16 == 0 && aligned16(x.raw()) && aligned16(out.raw()))
    launch_permute<uint4>(x, src, topk, out, row_bytes / 16, st);
  else if (dtype_size(out.dtype()) == 4)
    launch_permute<uint32_t>(x, src, topk, out, row_bytes / 4, st);
  else
    launch_permute<uint16_t>(x, src, topk, out, row_bytes / 2, st);
  MT_CUDA_CHECK_LAUNCH();
}

void moe_permute_backward(const Tensor& dout, const Tensor& row_map, int topk, const Tensor& dx, Stream s) {
  const int64_t N = dx.size(0), C = dx.size(1);
  if (N == 0 || C == 0) return;
  CudaDeviceGuard guard(dx.device().index);
  dispatch_rows(dx.dtype(), C, {dout.raw(), dx.raw()}, [&](auto* tp, auto vec) {
    using T = std::remove_pointer_t<decltype(tp)>;
    permute_backward_kernel<T, decltype(vec)::value><<<row_grid(N), kRowBlock, 0, stream_of(s)>>>(
        static_cast<const T*>(dout.raw()), row_map.data<int32_t>(), topk, static_cast<T*>(dx.raw()), N, C);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void moe_unpermute(const Tensor& y, const Tensor& row_map, const Tensor& probs, const Tensor& out, Stream s) {
  const int64_t N = out.size(0), C = out.size(1);
  const int topk = int(probs.size(1));
  if (N == 0 || C == 0) return;
  CudaDeviceGuard guard(out.device().index);
  dispatch_rows(out.dtype(), C, {y.raw(), out.raw()}, [&](auto* tp, auto vec) {
    using T = std::remove_pointer_t<decltype(tp)>;
    unpermute_kernel<T, decltype(vec)::value><<<row_grid(N), kRowBlock, 0, stream_of(s)>>>(
        static_cast<const T*>(y.raw()), row_map.data<int32_t>(), probs.data<float>(), topk,
        static_cast<T*>(out.raw()), N, C);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& row_map, const Tensor& row_source,
                            const Tensor& probs, const Tensor& dy, const Tensor& dprobs, Stream s) {
  const int64_t R = dy.size(0), C = dy.size(1), pairs = probs.numel();
  const int topk = int(probs.size(1));
  CudaDeviceGuard guard(dy.device().index);
  const cudaStream_t st = stream_of(s);
  dispatch_rows(dy.dtype(), C, {dout.raw(), y.raw(), dy.raw()}, [&](auto* tp, auto vec) {
    using T = std::remove_pointer_t<decltype(tp)>;
    constexpr bool VEC = decltype(vec)::value;
    const T* d = static_cast<const T*>(dout.raw());
    if (R > 0 && C > 0) {
      unpermute_backward_dy_kernel<T, VEC><<<row_grid(R), kRowBlock, 0, st>>>(
          d, row_source.data<int32_t>(), probs.data<float>(), topk, static_cast<T*>(dy.raw()), R, C);
      MT_CUDA_CHECK_LAUNCH();
    }
    if (pairs > 0) {
      unpermute_backward_dprobs_kernel<T, VEC><<<grid_size(pairs * 32, kWarpBlock), kWarpBlock, 0, st>>>(
          d, static_cast<const T*>(y.raw()), row_map.data<int32_t>(), topk, dprobs.data<float>(), pairs, C);
      MT_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace mt::cuda
