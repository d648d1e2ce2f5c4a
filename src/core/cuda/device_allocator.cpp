#include "core/cuda/device_allocator.h"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <vector>

#include "core/cuda/cuda_check.h"
#include "core/error.h"

namespace mt::cuda_detail {

struct DeviceAllocator::Impl {
  int device = 0;
  mutable std::mutex mu;
  std::map<size_t, std::vector<void*>> free;  // size class -> cached blocks
  size_t in_use = 0, peak = 0, reserved = 0;

  void release_cached_locked() {
    for (auto& [cls, list] : free) {
      for (void* p : list) {
        MT_CUDA_CHECK(cudaFree(p));
        reserved -= cls;
      }
      list.clear();
    }
  }
};

DeviceAllocator::DeviceAllocator(int device) : impl_(new Impl) { impl_->device = device; }

// Classes: at least 512 bytes (small scratch buffers share one class), eight steps per power of
// two up to 64 MiB (at most 12.5% waste), then multiples of 2 MiB (large one-off buffers: flat
// parameter and gradient buffers, optimizer state).
size_t DeviceAllocator::size_class(size_t bytes) {
  if (bytes <= 512) return 512;
  constexpr size_t kLarge = size_t(64) << 20, kLargeStep = size_t(2) << 20;
  if (bytes > kLarge) return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
  size_t p = 512;
  while (p < bytes) p <<= 1;  // bytes in (p/2, p]
  const size_t step = p >> 4;  // (p/2)/8
  return (bytes + step - 1) / step * step;
}

void* DeviceAllocator::allocate(size_t bytes) {
  const size_t cls = size_class(bytes);
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  void* p = nullptr;
  auto it = s.free.find(cls);
  if (it != s.free.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
  } else {
    CudaDeviceGuard guard(s.device);
    cudaError_t err = cudaMalloc(&p, cls);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error state before retrying
      MT_CUDA_CHECK(cudaDeviceSynchronize());
      s.release_cached_locked();
      err = cudaMalloc(&p, cls);
      if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        MT_USER_ERROR("CUDA out of memory on cuda:{}: tried to allocate {:.1f} MiB with {:.1f} MiB in use; "
                      "reduce the micro-batch size or sequence length, or use more parallelism",
                      s.device, double(cls) / (1 << 20), double(s.in_use) / (1 << 20));
      }
    }
    MT_CUDA_CHECK(err);
    s.reserved += cls;
  }
  s.in_use += cls;
  if (s.in_use > s.peak) s.peak = s.in_use;
  return p;
}

void DeviceAllocator::deallocate(void* p, size_t bytes) {
  if (!p) return;
  const size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->in_use -= cls;
  impl_->free[cls].push_back(p);
}

size_t DeviceAllocator::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->in_use;
}
size_t DeviceAllocator::peak_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->peak;
}
size_t DeviceAllocator::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->reserved;
}
void DeviceAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->peak = impl_->in_use;
}
void DeviceAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  CudaDeviceGuard guard(impl_->device);
  MT_CUDA_CHECK(cudaDeviceSynchronize());
  impl_->release_cached_locked();
}

DeviceAllocator& device_allocator(int index) {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static DeviceAllocator* allocators[kMaxDevices] = {};
  MT_CHECK(index >= 0 && index < kMaxDevices, "CUDA device index {}", index);
  std::lock_guard<std::mutex> lock(mu);
  if (!allocators[index]) allocators[index] = new DeviceAllocator(index);
  return *allocators[index];
}

}  // namespace mt::cuda_detail
