#pragma once
// CUDA-event timing shared by the kernel benchmarks: milliseconds per call of fn, averaged over
// `iters` back-to-back calls after `warmup` untimed ones (plan building, clocks, caches).
#include <cuda_runtime.h>

#include <functional>

#include "core/cuda/cuda_check.h"

namespace mt::bench {

inline double ms_per_call(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  MT_CUDA_CHECK(cudaEventCreate(&a));
  MT_CUDA_CHECK(cudaEventCreate(&b));
  MT_CUDA_CHECK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) fn();
  MT_CUDA_CHECK(cudaEventRecord(b));
  MT_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  MT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  MT_CUDA_CHECK(cudaEventDestroy(a));
  MT_CUDA_CHECK(cudaEventDestroy(b));
  return ms / iters;
}

}  // namespace mt::bench
