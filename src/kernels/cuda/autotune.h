#pragma once
// Picking the fastest of a library's candidate algorithms for one call (cuBLASLt's GEMM
// algorithms, cuDNN's attention plans), timed on the call's own operands with CUDA events.
#include <cuda_runtime_api.h>

#include <functional>

namespace mt::cuda {

// The index of the fastest of candidates 0 .. n-1, where launch(i) queues candidate i once on
// `stream` and returns false (having queued nothing) if it cannot run. Candidate 0 is the
// library's own choice: another wins only if it is kAutotuneMargin faster, so timing noise never
// trades a good algorithm for an equal one. Round one times every candidate over ~0.5 ms of
// back-to-back calls after a warm-up; round two re-times the three fastest and candidate 0 over
// ~2 ms, each keeping its better time. Returns 0 without launching anything when `stream` is
// being captured into a CUDA graph (the timing synchronises) or n < 2; -1 when no candidate ran.
// Synchronises the host with `stream`.
constexpr float kAutotuneMargin = 0.97f;
int autotune_pick(int n, const std::function<bool(int)>& launch, cudaStream_t stream);

}  // namespace mt::cuda
