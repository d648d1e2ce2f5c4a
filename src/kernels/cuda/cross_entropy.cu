// Fused softmax + cross-entropy, one block per row of logits [N, Vp] (columns < vocab count):
//   pass 1: each thread keeps an online (max m, sum s = sum exp(x - m)) over its columns; the
//           block combines the pairs in a fixed order: lse = m + log s; loss = lse - x[target]
//   pass 2 (with dlogits): dlogits[v] = dloss * (exp(x_v - lse) - [v == target]), v < vocab;
//           0 for the padding columns v >= vocab.
// x[target] is read before any gradient is written and every thread rewrites only the elements
// it reads, so dlogits may alias logits. Bytes: the row is read twice (the second read mostly
// from L2 for rows up to a few hundred KB) and the gradient written once. A target outside
// [0, vocab) gives a NaN loss (the CPU backend aborts; a kernel cannot report it cheaply).
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 512;

struct MaxSum {
  float m, s;
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}
__device__ __forceinline__ void online_add(MaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * expf(a.m - x) + 1.0f;
    a.m = x;
  } else {
    a.s += expf(x - a.m);
  }
}

template <class T, bool VEC>
__global__ void cross_entropy_kernel(const T* logits, const int32_t* targets, int64_t Vp, int64_t vocab,
                                     float* losses, const float* dloss, T* dlogits) {
  __shared__ MaxSum shared[32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const T* x = logits + row * Vp;
  const int target = targets[row];
  const bool target_ok = target >= 0 && target < vocab;
  if (threadIdx.x == 0) target_logit = target_ok ? to_float(x[target]) : NAN;

  constexpr int P = VEC ? Pack<T>::N : 1;
  MaxSum acc{-FLT_MAX, 0.0f};  // not -inf: a -inf logit then adds exp(-inf) = 0, never NaN
  for (int64_t v = int64_t(threadIdx.x) * P; v < vocab; v += int64_t(blockDim.x) * P) {
    if constexpr (VEC) {
      const Pack<T> p = load_pack(x + v);
#pragma unroll
      for (int k = 0; k < P; ++k)
        if (v + k < vocab) online_add(acc, to_float(p.v[k]));
    } else {
      online_add(acc, to_float(x[v]));
    }
  }
  // Fixed-order combine: butterfly within warps, then warp results in order.
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, acc.m, o), __shfl_xor_sync(0xffffffffu, acc.s, o)};
    acc = combine(acc, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) shared[warp] = acc;
  __syncthreads();  // also publishes target_logit; all pass-1 reads are done after this
  MaxSum total = shared[0];
  for (int w = 1; w < nwarps; ++w) total = combine(total, shared[w]);
  const float lse = total.m + logf(total.s);
  if (threadIdx.x == 0) losses[row] = lse - target_logit;
  if (!dlogits) return;

  const float wgt = dloss[row];
  T* g = dlogits + row * Vp;
  for (int64_t v = int64_t(threadIdx.x) * P; v < Vp; v += int64_t(blockDim.x) * P) {
    if constexpr (VEC) {
      Pack<T> p = load_pack(x + v);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int64_t col = v + k;
        const float grad = col < vocab ? wgt * (expf(to_float(p.v[k]) - lse) - (col == target ? 1.0f : 0.0f)) : 0.0f;
        p.v[k] = from_float<T>(grad);
      }
      store_pack(g + v, p);
    } else {
      const float grad = v < vocab ? wgt * (expf(to_float(x[v]) - lse) - (v == target ? 1.0f : 0.0f)) : 0.0f;
      g[v] = from_float<T>(grad);
    }
  }
}

}  // namespace

void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab, const Tensor& losses,
                                    const Tensor* dloss, const Tensor* dlogits, Stream s) {
  const int64_t N = logits.size(0), Vp = logits.size(1);
  if (N == 0) return;
  MT_CHECK(N <= INT32_MAX, "cross_entropy: {} rows", N);
  CudaDeviceGuard guard(logits.device().index);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = static_cast<const T*>(logits.raw());
    T* g = dlogits ? static_cast<T*>(dlogits->raw()) : nullptr;
    const float* dl = dloss ? dloss->data<float>() : nullptr;
    const bool vec = Vp % Pack<T>::N == 0 && aligned16(x) && (!g || aligned16(g));
    if (vec)
      cross_entropy_kernel<T, true><<<unsigned(N), kBlock, 0, stream_of(s)>>>(x, targets.data<int32_t>(), Vp, vocab,
                                                                              losses.data<float>(), dl, g);
    else
      cross_entropy_kernel<T, false><<<unsigned(N), kBlock, 0, stream_of(s)>>>(x, targets.data<int32_t>(), Vp, vocab,
                                                                               losses.data<float>(), dl, g);
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
