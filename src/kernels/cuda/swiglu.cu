// SwiGLU on rows x = [gate | up] (each F wide):
//   y = silu(g) u,  silu(g) = g sigmoid(g)
//   dgate = dy u sigmoid(g) (1 + g (1 - sigmoid(g))),  dup = dy silu(g)
// fp32 math, one rounding. Memory-bound: forward reads 2F and writes F per row, backward reads
// 3F and writes 2F. A work item is one feature j of one row, or N consecutive features (a
// 16-byte pack: N = 4 fp32, 8 bf16/fp16) when F % N == 0 and every pointer is 16-byte aligned;
// then each row's gate, up, dy and output offsets are multiples of 16 bytes too.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;

// expf (not __expf): the accurate one costs nothing next to the memory traffic. e^-g = inf
// for very negative g gives sigmoid 0, as it should.
__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <class T, bool VEC>
__global__ void swiglu_forward_kernel(const T* x, T* y, int64_t rows, int64_t F) {
  constexpr int N = VEC ? Pack<T>::N : 1;
  const int64_t per_row = F / N, items = rows * per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < items; w += stride) {
    const int64_t r = w / per_row, j = (w - r * per_row) * N;
    const T* gate = x + r * 2 * F + j;
    T* out = y + r * F + j;
    if constexpr (VEC) {
      const Pack<T> g = load_pack(gate), u = load_pack(gate + F);
      Pack<T> o;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float gv = to_float(g.v[k]);
        o.v[k] = from_float<T>(gv * sigmoid(gv) * to_float(u.v[k]));
      }
      store_pack(out, o);
    } else {
      const float gv = to_float(gate[0]);
      out[0] = from_float<T>(gv * sigmoid(gv) * to_float(gate[F]));
    }
  }
}

__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float& dg, float& du) {
  const float sg = sigmoid(g);
  dg = d * u * sg * (1.0f + g * (1.0f - sg));
  du = d * g * sg;
}

template <class T, bool VEC>
__global__ void swiglu_backward_kernel(const T* dy, const T* x, T* dx, int64_t rows, int64_t F) {
  constexpr int N = VEC ? Pack<T>::N : 1;
  const int64_t per_row = F / N, items = rows * per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < items; w += stride) {
    const int64_t r = w / per_row, j = (w - r * per_row) * N;
    const T* gate = x + r * 2 * F + j;
    const T* d = dy + r * F + j;
    T* dgate = dx + r * 2 * F + j;
    if constexpr (VEC) {
      const Pack<T> g = load_pack(gate), u = load_pack(gate + F), pd = load_pack(d);
      Pack<T> og, ou;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        float dg, du;
        swiglu_grad(to_float(g.v[k]), to_float(u.v[k]), to_float(pd.v[k]), dg, du);
        og.v[k] = from_float<T>(dg);
        ou.v[k] = from_float<T>(du);
      }
      store_pack(dgate, og);
      store_pack(dgate + F, ou);
    } else {
      float dg, du;
      swiglu_grad(to_float(gate[0]), to_float(gate[F]), to_float(d[0]), dg, du);
      dgate[0] = from_float<T>(dg);
      dgate[F] = from_float<T>(du);
    }
  }
}

}  // namespace

void swiglu_forward(const Tensor& x, const Tensor& y, Stream s) {
  const int64_t F = y.size(-1), rows = F > 0 ? y.numel() / F : 0;
  if (rows == 0) return;
  CudaDeviceGuard guard(x.device().index);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = Pack<T>::N;
    const T* px = static_cast<const T*>(x.raw());
    T* py = static_cast<T*>(y.raw());
    if (F % N == 0 && aligned16(px) && aligned16(py))
      swiglu_forward_kernel<T, true><<<grid_size(rows * (F / N), kBlock), kBlock, 0, stream_of(s)>>>(px, py, rows, F);
    else
      swiglu_forward_kernel<T, false><<<grid_size(rows * F, kBlock), kBlock, 0, stream_of(s)>>>(px, py, rows, F);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void swiglu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s) {
  const int64_t F = dy.size(-1), rows = F > 0 ? dy.numel() / F : 0;
  if (rows == 0) return;
  CudaDeviceGuard guard(x.device().index);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = Pack<T>::N;
    const T* pdy = static_cast<const T*>(dy.raw());
    const T* px = static_cast<const T*>(x.raw());
    T* pdx = static_cast<T*>(dx.raw());
    if (F % N == 0 && aligned16(pdy) && aligned16(px) && aligned16(pdx))
      swiglu_backward_kernel<T, true>
          <<<grid_size(rows * (F / N), kBlock), kBlock, 0, stream_of(s)>>>(pdy, px, pdx, rows, F);
    else
      swiglu_backward_kernel<T, false><<<grid_size(rows * F, kBlock), kBlock, 0, stream_of(s)>>>(pdy, px, pdx, rows, F);
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
