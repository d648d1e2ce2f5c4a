// Rotary position embedding on the query and key heads of qkv [B, T, G, S, D], S = Q/G + 2
// (slots 0 .. S-3 query heads, S-2 the key head, S-1 the value head, which is skipped):
//   i < R/2:  y[i]       = x[i] c - x[i + R/2] s
//             y[i + R/2] = x[i + R/2] c + x[i] s,     c = cos[t, i], s = sin[t, i]
// Backward is the inverse rotation (s -> -s). In place, fp32 math, one rounding. Memory-bound:
// reads and writes the first R channels of every query and key head once; the [T, R/2] fp32
// tables are re-read per head and served from L2. A work item is one channel pair (i, i + R/2)
// of one head, or V consecutive pairs when 16-byte packs fit (V = 4 fp32, 8 bf16/fp16), so each
// thread issues two 16-byte loads of x and V/4 of each table; items of a head are adjacent, so
// a warp reads contiguous runs of a head's first half and second half.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;

// Where rotated head `h` (over B*T*G*(S-1) query and key heads) lives: its element offset in
// qkv and its position t.
struct RopeLayout {
  int64_t T, G, S, D, half;
  __device__ __forceinline__ int64_t head_offset(int64_t h) const {
    const int64_t gt = h / (S - 1), slot = h - gt * (S - 1);  // gt = (b T + t) G + g
    return (gt * S + slot) * D;
  }
  __device__ __forceinline__ int64_t position(int64_t h) const { return (h / ((S - 1) * G)) % T; }
};

__device__ __forceinline__ void rotate(float& x1, float& x2, float c, float s) {
  const float a = x1 * c - x2 * s, b = x2 * c + x1 * s;
  x1 = a;
  x2 = b;
}

// One pair per item; items = heads * half.
template <class T>
__global__ void rope_kernel(T* qkv, const float* cos, const float* sin, RopeLayout L, int64_t items, float sign) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < items; w += stride) {
    const int64_t h = w / L.half, i = w - h * L.half;
    T* x = qkv + L.head_offset(h);
    const int64_t tab = L.position(h) * L.half + i;
    float x1 = to_float(x[i]), x2 = to_float(x[i + L.half]);
    rotate(x1, x2, cos[tab], sign * sin[tab]);
    x[i] = from_float<T>(x1);
    x[i + L.half] = from_float<T>(x2);
  }
}

// V = Pack<T>::N pairs per item; items = heads * half / V. Requires half % V == 0, D % V == 0 and
// 16-byte aligned qkv, cos, sin, so every pack below starts on a 16-byte boundary (V >= 4, so a
// table row of half floats is a whole number of float packs too).
template <class T>
__global__ void rope_vec_kernel(T* qkv, const float* cos, const float* sin, RopeLayout L, int64_t items, float sign) {
  constexpr int V = Pack<T>::N, VF = Pack<float>::N;
  const int64_t per_head = L.half / V;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < items; w += stride) {
    const int64_t h = w / per_head, i = (w - h * per_head) * V;
    T* x = qkv + L.head_offset(h);
    const int64_t tab = L.position(h) * L.half + i;
    Pack<T> p1 = load_pack(x + i), p2 = load_pack(x + i + L.half);
#pragma unroll
    for (int k0 = 0; k0 < V; k0 += VF) {
      const Pack<float> c = load_pack(cos + tab + k0), s = load_pack(sin + tab + k0);
#pragma unroll
      for (int k = 0; k < VF; ++k) {
        float x1 = to_float(p1.v[k0 + k]), x2 = to_float(p2.v[k0 + k]);
        rotate(x1, x2, c.v[k], sign * s.v[k]);
        p1.v[k0 + k] = from_float<T>(x1);
        p2.v[k0 + k] = from_float<T>(x2);
      }
    }
    store_pack(x + i, p1);
    store_pack(x + i + L.half, p2);
  }
}

void rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int rot_dim, float sign, Stream s) {
  const RopeLayout L{qkv.size(1), qkv.size(2), qkv.size(3), qkv.size(4), rot_dim / 2};
  const int64_t heads = qkv.size(0) * L.T * L.G * (L.S - 1);
  if (heads == 0) return;
  CudaDeviceGuard guard(qkv.device().index);
  const float* pc = cos.data<float>();
  const float* ps = sin.data<float>();
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = Pack<T>::N;
    T* px = static_cast<T*>(qkv.raw());
    if (L.half % V == 0 && L.D % V == 0 && aligned16(px) && aligned16(pc) && aligned16(ps)) {
      const int64_t items = heads * (L.half / V);
      rope_vec_kernel<T><<<grid_size(items, kBlock), kBlock, 0, stream_of(s)>>>(px, pc, ps, L, items, sign);
    } else {
      const int64_t items = heads * L.half;
      rope_kernel<T><<<grid_size(items, kBlock), kBlock, 0, stream_of(s)>>>(px, pc, ps, L, items, sign);
    }
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int /*n_query_groups*/, int rot_dim,
                  Stream s) {
  rope(qkv, cos, sin, rot_dim, 1.0f, s);
}

void rope_backward(const Tensor& dqkv, const Tensor& cos, const Tensor& sin, int /*n_query_groups*/, int rot_dim,
                   Stream s) {
  rope(dqkv, cos, sin, rot_dim, -1.0f, s);
}

}  // namespace mt::cuda
