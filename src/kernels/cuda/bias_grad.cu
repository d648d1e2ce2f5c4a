// Bias gradient: db_accum[c] += sum_n dy[n, c], deterministic two-pass column reduction (see
// column_reduce.cuh). Reads dy once; the fp32 partials add N/256 of a row each per column.
// Pass 1 reads 16-byte packs where C is a whole number of packs and dy is aligned: a warp then
// reads 512 contiguous bytes of a row (32 lanes x 8 bf16 columns) instead of 64 (32 lanes x one
// column), which is what DRAM needs to run at speed; other shapes take the one-column kernel.
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

// The packed pass 1: a block covers kPackCols packs of columns (threadIdx.x) x one chunk of rows,
// kRowThreads rows at a time (threadIdx.y); each thread sums its pack's columns over rows
// r0 + y, r0 + y + kRowThreads, ... in order, then thread t of the block adds column t's
// kRowThreads sums in y order. Fixed order throughout: the same bits every run.
constexpr int kPackCols = 32;

template <class T>
__global__ void __launch_bounds__(kPackCols * kRowThreads)
    bias_grad_partial_packed_kernel(const T* dy, int64_t N, int64_t C, int64_t chunk_rows, float* partial) {
  constexpr int P = Pack<T>::N;
  __shared__ float shared[kRowThreads][kPackCols * P + 1];
  const int64_t c0 = (int64_t(blockIdx.x) * kPackCols + threadIdx.x) * P;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < N ? r0 + chunk_rows : N;
  float acc[P];
#pragma unroll
  for (int j = 0; j < P; ++j) acc[j] = 0.0f;
  if (c0 < C) {
#pragma unroll 4
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) {
      const Pack<T> v = load_pack(dy + r * C + c0);
#pragma unroll
      for (int j = 0; j < P; ++j) acc[j] += to_float(v.v[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < P; ++j) shared[threadIdx.y][threadIdx.x * P + j] = acc[j];
  __syncthreads();
  // kPackCols * kRowThreads threads, kPackCols * P columns: each thread finishes P / kRowThreads of them.
  const int t = threadIdx.y * kPackCols + threadIdx.x;
  for (int col = t; col < kPackCols * P; col += kPackCols * kRowThreads) {
    const int64_t c = int64_t(blockIdx.x) * kPackCols * P + col;
    if (c >= C) break;
    float total = 0.0f;
    for (int k = 0; k < kRowThreads; ++k) total += shared[k][col];
    partial[int64_t(blockIdx.y) * C + c] = total;
  }
}

}  // namespace

void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum, Stream s) {
  const int64_t C = db_accum.numel(), N = C ? dy.numel() / C : 0;
  if (N == 0 || C == 0) return;
  CudaDeviceGuard guard(dy.device().index);
  const int64_t chunk_rows = column_chunk_rows(N), chunks = ceil_div(N, chunk_rows);
  Tensor partial = Tensor::empty({chunks, C}, DType::F32, dy.device());
  dispatch_float(dy.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = static_cast<const T*>(dy.raw());
    constexpr int P = Pack<T>::N;
    if (C % P == 0 && aligned16(p)) {
      const dim3 grid(unsigned(ceil_div(C, int64_t(kPackCols) * P)), unsigned(chunks)), block(kPackCols, kRowThreads);
      bias_grad_partial_packed_kernel<T><<<grid, block, 0, stream_of(s)>>>(p, N, C, chunk_rows, partial.data<float>());
    } else {
      const dim3 grid(unsigned(ceil_div(C, kColTile)), unsigned(chunks)), block(kColTile, kRowThreads);
      bias_grad_partial_kernel<T><<<grid, block, 0, stream_of(s)>>>(p, N, C, chunk_rows, partial.data<float>());
    }
  });
  MT_CUDA_CHECK_LAUNCH();
  column_finish(partial.data<float>(), chunks, C, db_accum.data<float>(), stream_of(s));
}

}  // namespace mt::cuda
