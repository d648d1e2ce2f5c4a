#pragma once
// Deterministic column sums of a row-major [N, C] matrix into fp32 accumulators (bias and
// LayerNorm weight gradients), without float atomics: rows are cut into chunks of a size that
// depends on N only; pass 1 writes one partial sum per (chunk, column) — a block covers
// kColTile columns x one chunk, its threads stride the chunk's rows in a fixed pattern and
// combine in a fixed order — and pass 2 adds the partials of each column in chunk order.
// Traffic: pass 1 reads the matrix once (a warp reads kColTile contiguous elements of a row);
// pass 2 reads chunks * C floats (N / 256 of the matrix).
// column_finish_pair is a pass 2 for callers that write their own partials: two [rows, C]
// partial arrays back to back (LayerNorm's dw and db) finished in one launch, with kFinishRows
// threads per column summing a strided share of the rows, then combining in a fixed order.
#include "kernels/cuda/common.cuh"

namespace mt::cuda {

constexpr int kColTile = 32;     // columns per block (threadIdx.x)
constexpr int kRowThreads = 8;   // threads down the rows (threadIdx.y)
constexpr int kFinishRows = 16;  // threads down the partial rows in column_finish_pair

inline int64_t column_chunk_rows(int64_t N) {
  int64_t rows = 256;
  while (ceil_div(N, rows) > 65535) rows *= 2;  // gridDim.y limit
  return rows;
}

// Sums the ROWS per-thread values of each column held in `acc` (one per thread, blockDim.y ==
// ROWS) into the first row of threads; returns the column total in threadIdx.y == 0.
template <int ROWS = kRowThreads>
__device__ __forceinline__ float column_block_total(float acc, float (*shared)[kColTile + 1]) {
  shared[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  float total = 0.0f;
  if (threadIdx.y == 0)
    for (int k = 0; k < ROWS; ++k) total += shared[k][threadIdx.x];
  __syncthreads();
  return total;
}

namespace {  // a copy per translation unit: kernels are not shared across files without -rdc
// accum[c] += sum over chunks k (in order) of partial[k, c].
__global__ void column_finish_kernel(const float* partial, int64_t chunks, int64_t C, float* accum) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float total = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) total += partial[k * C + c];
  accum[c] += total;
}

// (blockIdx.y ? accum1 : accum0)[c] += sum over k of partial[blockIdx.y, k, c]: thread (x, y)
// sums rows y, y + kFinishRows, ... in order, then the block adds the kFinishRows sums in y order.
__global__ void column_finish_pair_kernel(const float* partial, int64_t rows, int64_t C, float* accum0,
                                          float* accum1) {
  __shared__ float shared[kFinishRows][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const float* p = partial + int64_t(blockIdx.y) * rows * C;
  float acc = 0.0f;
  if (c < C)
    for (int64_t k = threadIdx.y; k < rows; k += kFinishRows) acc += p[k * C + c];
  const float total = column_block_total<kFinishRows>(acc, shared);
  if (threadIdx.y == 0 && c < C) (blockIdx.y ? accum1 : accum0)[c] += total;
}
}  // namespace

inline void column_finish(const float* partial, int64_t chunks, int64_t C, float* accum, cudaStream_t st) {
  constexpr int block = 256;
  column_finish_kernel<<<int(ceil_div(C, block)), block, 0, st>>>(partial, chunks, C, accum);
  MT_CUDA_CHECK_LAUNCH();
}

// accum0[c] += sum_k partial[0, k, c], accum1[c] += sum_k partial[1, k, c]; partial is [2, rows, C].
inline void column_finish_pair(const float* partial, int64_t rows, int64_t C, float* accum0, float* accum1,
                               cudaStream_t st) {
  const dim3 grid(unsigned(ceil_div(C, kColTile)), 2), block(kColTile, kFinishRows);
  column_finish_pair_kernel<<<grid, block, 0, st>>>(partial, rows, C, accum0, accum1);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
