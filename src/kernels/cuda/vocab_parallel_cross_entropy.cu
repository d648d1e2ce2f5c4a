// Vocabulary-parallel cross-entropy on the GPU: one block per row of this rank's logits
// [N, Vl], three kernels around the two tensor-parallel all-reduces (see the header in
// kernels/). Block reductions combine threads in a fixed order (butterfly within warps, warps
// in order), so results are bit-reproducible. Bytes: passes 1 and 2 read the row once each,
// pass 3 reads it and writes the gradient once (dlogits may alias logits: each thread rewrites
// only what it read).
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vocab_parallel_cross_entropy.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;

template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, u) : v + u;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = shared[0];
  for (int w = 1; w < nwarps; ++w) total = kMax ? fmaxf(total, shared[w]) : total + shared[w];
  return total;
}

__host__ __device__ __forceinline__ int64_t valid_columns(int64_t Vl, int64_t vocab_start, int64_t vocab) {
  const int64_t n = vocab - vocab_start;
  return n < 0 ? 0 : (n > Vl ? Vl : n);
}

template <class T>
__global__ void max_kernel(const T* logits, int64_t Vl, int64_t nv, float* row_max) {
  __shared__ float shared[32];
  const T* x = logits + int64_t(blockIdx.x) * Vl;
  float m = -FLT_MAX;
  for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) m = fmaxf(m, to_float(x[v]));
  m = block_reduce<true>(m, shared);
  if (threadIdx.x == 0) row_max[blockIdx.x] = m;
}

template <class T>
__global__ void sum_exp_kernel(const T* logits, const int32_t* targets, int64_t Vl, int64_t nv, int64_t vocab_start,
                               const float* row_max, float* sum_exp, float* target_logit) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * Vl;
  const float m = row_max[row];
  float s = 0.0f;
  for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) s += expf(to_float(x[v]) - m);
  s = block_reduce<false>(s, shared);
  if (threadIdx.x == 0) {
    sum_exp[row] = s;
    const int64_t t = int64_t(targets[row]) - vocab_start;
    target_logit[row] = t >= 0 && t < nv ? to_float(x[t]) : 0.0f;
  }
}

template <class T>
__global__ void loss_grad_kernel(const T* logits, const int32_t* targets, int64_t Vl, int64_t nv, int64_t vocab_start,
                                 const float* row_max, const float* sum_exp, const float* target_logit, float* losses,
                                 const float* dloss, T* dlogits) {
  const int64_t row = blockIdx.x;
  const float lse = row_max[row] + logf(sum_exp[row]);
  if (threadIdx.x == 0) losses[row] = lse - target_logit[row];
  if (!dlogits) return;
  const T* x = logits + row * Vl;
  T* g = dlogits + row * Vl;
  const float w = dloss[row];
  const int64_t t = int64_t(targets[row]) - vocab_start;
  for (int64_t v = threadIdx.x; v < Vl; v += blockDim.x) {
    const float grad = v < nv ? w * (expf(to_float(x[v]) - lse) - (v == t ? 1.0f : 0.0f)) : 0.0f;
    g[v] = from_float<T>(grad);
  }
}

}  // namespace

void vocab_parallel_ce_max(const Tensor& logits, int64_t vocab_start, int64_t vocab, const Tensor& row_max, Stream s) {
  const int64_t N = logits.size(0), Vl = logits.size(1);
  if (N == 0) return;
  CudaDeviceGuard guard(logits.device().index);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    max_kernel<T><<<unsigned(N), kBlock, 0, stream_of(s)>>>(static_cast<const T*>(logits.raw()), Vl,
                                                             valid_columns(Vl, vocab_start, vocab),
                                                             row_max.data<float>());
  });
  MT_CUDA_CHECK_LAUNCH();
}

void vocab_parallel_ce_sum_exp(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                               const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit, Stream s) {
  const int64_t N = logits.size(0), Vl = logits.size(1);
  if (N == 0) return;
  CudaDeviceGuard guard(logits.device().index);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    sum_exp_kernel<T><<<unsigned(N), kBlock, 0, stream_of(s)>>>(
        static_cast<const T*>(logits.raw()), targets.data<int32_t>(), Vl, valid_columns(Vl, vocab_start, vocab),
        vocab_start, row_max.data<float>(), sum_exp.data<float>(), target_logit.data<float>());
  });
  MT_CUDA_CHECK_LAUNCH();
}

void vocab_parallel_ce_loss_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                                 const Tensor& losses, const Tensor* dloss, const Tensor* dlogits, Stream s) {
  const int64_t N = logits.size(0), Vl = logits.size(1);
  if (N == 0) return;
  CudaDeviceGuard guard(logits.device().index);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    loss_grad_kernel<T><<<unsigned(N), kBlock, 0, stream_of(s)>>>(
        static_cast<const T*>(logits.raw()), targets.data<int32_t>(), Vl, valid_columns(Vl, vocab_start, vocab),
        vocab_start, row_max.data<float>(), sum_exp.data<float>(), target_logit.data<float>(), losses.data<float>(),
        dloss ? dloss->data<float>() : nullptr, dlogits ? static_cast<T*>(dlogits->raw()) : nullptr);
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
