// Bias gradient: db_accum[c] += sum_n dy[n, c], deterministic two-pass column reduction (see
// column_reduce.cuh). Reads dy once; the fp32 partials add N/256 of a row each per column.
#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {

namespace {

template <class T>
__global__ void bias_grad_partial_kernel(const T* dy, int64_t N, int64_t C, int64_t chunk_rows, float* partial) {
  __shared__ float shared[kRowThreads][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < N ? r0 + chunk_rows : N;
  float acc = 0.0f;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) acc += to_float(dy[r * C + c]);
  const float total = column_block_total(acc, shared);
  if (threadIdx.y == 0 && c < C) partial[int64_t(blockIdx.y) * C + c] = total;
}

}  // namespace

void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum, Stream s) {
  const int64_t C = db_accum.numel(), N = C ? dy.numel() / C : 0;
  if (N == 0 || C == 0) return;
  CudaDeviceGuard guard(dy.device().index);
  const int64_t chunk_rows = column_chunk_rows(N), chunks = ceil_div(N, chunk_rows);
  Tensor partial = Tensor::empty({chunks, C}, DType::F32, dy.device());
  const dim3 grid(unsigned(ceil_div(C, kColTile)), unsigned(chunks)), block(kColTile, kRowThreads);
  dispatch_float(dy.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    bias_grad_partial_kernel<T><<<grid, block, 0, stream_of(s)>>>(static_cast<const T*>(dy.raw()), N, C, chunk_rows,
                                                                   partial.data<float>());
  });
  MT_CUDA_CHECK_LAUNCH();
  column_finish(partial.data<float>(), chunks, C, db_accum.data<float>(), stream_of(s));
}

}  // namespace mt::cuda
