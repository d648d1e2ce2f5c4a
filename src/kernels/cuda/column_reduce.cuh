#pragma once
// Deterministic column sums of a row-major [N, C] matrix into fp32 accumulators (bias and
// LayerNorm weight gradients), without float atomics: rows are cut into chunks of a size that
// depends on N only; pass 1 writes one partial sum per (chunk, column) — a block covers
// kColTile columns x one chunk, its threads stride the chunk's rows in a fixed pattern and
// combine in a fixed order — and pass 2 adds the partials of each column in chunk order.
// Traffic: pass 1 reads the matrix once (a warp reads kColTile contiguous elements of a row);
// pass 2 reads chunks * C floats (N / 256 of the matrix).
#include "kernels/cuda/common.cuh"

namespace mt::cuda {

constexpr int kColTile = 32;    // columns per block (threadIdx.x)
constexpr int kRowThreads = 8;  // threads down the rows (threadIdx.y)

inline int64_t column_chunk_rows(int64_t N) {
  int64_t rows = 256;
  while (ceil_div(N, rows) > 65535) rows *= 2;  // gridDim.y limit
  return rows;
}

// Sums the kRowThreads per-thread values of each column held in `acc` (one per thread) into
// the first row of threads; returns the column total in threadIdx.y == 0.
__device__ __forceinline__ float column_block_total(float acc, float (*shared)[kColTile + 1]) {
  shared[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  float total = 0.0f;
  if (threadIdx.y == 0)
    for (int k = 0; k < kRowThreads; ++k) total += shared[k][threadIdx.x];
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
}  // namespace

inline void column_finish(const float* partial, int64_t chunks, int64_t C, float* accum, cudaStream_t st) {
  constexpr int block = 256;
  column_finish_kernel<<<int(ceil_div(C, block)), block, 0, st>>>(partial, chunks, C, accum);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
