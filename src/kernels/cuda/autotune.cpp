#include "kernels/cuda/autotune.h"

#include <algorithm>
#include <vector>

#include "core/cuda/cuda_check.h"

namespace mt::cuda {

int autotune_pick(int n, const std::function<bool(int)>& launch, cudaStream_t stream) {
  if (n < 2) return 0;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MT_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return 0;
  cudaEvent_t start, stop;
  MT_CUDA_CHECK(cudaEventCreate(&start));
  MT_CUDA_CHECK(cudaEventCreate(&stop));
  auto elapsed_ms = [&] {
    MT_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    MT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms;
  };
  // ms per call of candidate i over about budget_ms of calls after one warm-up; < 0: cannot run.
  auto time_ms = [&](int i, float budget_ms) {
    MT_CUDA_CHECK(cudaEventRecord(start, stream));
    const bool ran = launch(i);
    MT_CUDA_CHECK(cudaEventRecord(stop, stream));
    if (!ran) {
      elapsed_ms();
      return -1.0f;
    }
    const int reps = std::clamp(int(budget_ms / std::max(elapsed_ms(), 1e-3f)), 2, 50);
    MT_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int r = 0; r < reps; ++r) launch(i);
    MT_CUDA_CHECK(cudaEventRecord(stop, stream));
    return elapsed_ms() / float(reps);
  };
  std::vector<float> ms(n);
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) {
    ms[i] = time_ms(i, 0.5f);
    order[i] = i;
  }
  auto faster = [&](int i, int j) { return ms[j] < 0 || (ms[i] >= 0 && ms[i] < ms[j]); };
  std::sort(order.begin(), order.end(), faster);
  for (int r = 0; r < n && r < 3; ++r)
    if (ms[order[r]] >= 0) ms[order[r]] = std::min(ms[order[r]], time_ms(order[r], 2.0f));
  if (ms[0] >= 0) ms[0] = std::min(ms[0], time_ms(0, 2.0f));
  MT_CUDA_CHECK(cudaEventDestroy(start));
  MT_CUDA_CHECK(cudaEventDestroy(stop));
  const int best = *std::min_element(order.begin(), order.end(), faster);
  if (ms[best] < 0) return -1;
  return ms[0] >= 0 && ms[best] >= kAutotuneMargin * ms[0] ? 0 : best;
}

}  // namespace mt::cuda
