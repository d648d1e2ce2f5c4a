#pragma once
// The CUDA backend's entry points for core: device discovery, registration of the device
// allocator and memory ops with Tensor, and allocator statistics. Plain C++ (no CUDA headers),
// so any layer may include it; without the CUDA backend these report no device.
#include <cstddef>

namespace mt {

#if defined(MT_WITH_CUDA) && MT_WITH_CUDA

// Number of usable CUDA devices; 0 when there is no driver or no device (never aborts).
int cuda_device_count();
// Registers the caching device allocator and the device memset/copy with core. Idempotent and
// cheap (it does not touch the driver); also run by a static initializer of this library.
void cuda_init_backend();
// Caching allocator statistics for `device` (-1: the current device), in bytes. "In use" counts
// live tensors (rounded to their size class); "reserved" adds the cached free blocks.
size_t cuda_bytes_in_use(int device = -1);
size_t cuda_peak_bytes(int device = -1);
size_t cuda_reserved_bytes(int device = -1);
void cuda_reset_peak_bytes(int device = -1);
// Returns cached free blocks to the driver (cudaFree); never needed in steady state.
void cuda_empty_cache(int device = -1);
// cudaProfilerStart/Stop: the range a profiler started with its capture off records (ncu
// --profile-from-start off, nsys --capture-range=cudaProfilerApi).
void cuda_profiler_start();
void cuda_profiler_stop();

#else

inline int cuda_device_count() { return 0; }
inline void cuda_init_backend() {}
inline size_t cuda_bytes_in_use(int = -1) { return 0; }
inline size_t cuda_peak_bytes(int = -1) { return 0; }
inline size_t cuda_reserved_bytes(int = -1) { return 0; }
inline void cuda_reset_peak_bytes(int = -1) {}
inline void cuda_empty_cache(int = -1) {}
inline void cuda_profiler_start() {}
inline void cuda_profiler_stop() {}

#endif

}  // namespace mt
