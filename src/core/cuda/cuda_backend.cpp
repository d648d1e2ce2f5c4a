#include "core/cuda/cuda_backend.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <mutex>

#include "core/cuda/cuda_check.h"
#include "core/cuda/device_allocator.h"
#include "core/error.h"
#include "core/tensor.h"

namespace mt {
namespace {

Allocator* allocator_factory(int index) {
  MT_CHECK(index < cuda_device_count(), "cuda:{} requested but {} CUDA device(s) are visible", index,
           cuda_device_count());
  return &cuda_detail::device_allocator(index);
}

// Tensor::zero_: ordered on the legacy default stream, which synchronises with every blocking
// stream, so later work on any such stream sees the zeros; the host does not wait.
void memset_zero(void* p, size_t bytes, Device d) {
  CudaDeviceGuard guard(d.index);
  MT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cudaStreamLegacy));
}

// Tensor::copy_from: synchronous (the data has arrived when it returns), so host buffers may be
// reused or freed right after. Peer copies go through cudaMemcpyPeer.
void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (dd.is_cuda() && sd.is_cuda() && dd.index != sd.index) {
    CudaDeviceGuard guard(dd.index);
    MT_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, bytes, cudaStreamLegacy));
    MT_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
    return;
  }
  const cudaMemcpyKind kind = dd.is_cuda() ? (sd.is_cuda() ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                           : cudaMemcpyDeviceToHost;
  CudaDeviceGuard guard(dd.is_cuda() ? dd.index : sd.index);
  MT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, cudaStreamLegacy));
  MT_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

int resolve(int device) {
  if (device >= 0) return device;
  int d = 0;
  MT_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

// Registration needs no driver call, so doing it at load time costs CPU-only runs nothing.
[[maybe_unused]] const bool g_registered = (cuda_init_backend(), true);

}  // namespace

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // no driver or no device: not an error for the caller
      return 0;
    }
    return n;
  }();
  return count;
}

void cuda_init_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_device_allocator(&allocator_factory);
    DeviceMemOps ops;
    ops.memset_zero = &memset_zero;
    ops.copy = &copy;
    register_device_mem_ops(ops);
  });
}

size_t cuda_bytes_in_use(int device) { return cuda_detail::device_allocator(resolve(device)).bytes_in_use(); }
size_t cuda_peak_bytes(int device) { return cuda_detail::device_allocator(resolve(device)).peak_bytes(); }
size_t cuda_reserved_bytes(int device) { return cuda_detail::device_allocator(resolve(device)).reserved_bytes(); }
void cuda_reset_peak_bytes(int device) { cuda_detail::device_allocator(resolve(device)).reset_peak(); }
void cuda_empty_cache(int device) { cuda_detail::device_allocator(resolve(device)).empty_cache(); }
void cuda_profiler_start() { MT_CUDA_CHECK(cudaProfilerStart()); }
void cuda_profiler_stop() { MT_CUDA_CHECK(cudaProfilerStop()); }

}  // namespace mt
