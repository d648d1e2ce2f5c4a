#pragma once
// Caching CUDA device allocator, one per device. Blocks are rounded up to a size class and,
// when freed, kept on that class's free list for the next request of the class: cudaMalloc runs
// only while the working set grows, cudaFree only when an allocation fails (then every cached
// block is released and the allocation retried) or on cuda_empty_cache().
//
// Streams: a freed block may be handed out again at once. That is safe while all work touching
// it is ordered on one stream (or on blocking streams synchronised with it); a tensor used on a
// second stream must outlive that use (no record_stream yet).
#include <cstddef>

#include "core/allocator.h"

namespace mt::cuda_detail {

class DeviceAllocator final : public Allocator {
 public:
  explicit DeviceAllocator(int device);
  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) override;
  size_t bytes_in_use() const override;
  size_t peak_bytes() const override;
  size_t reserved_bytes() const;
  void reset_peak();
  void empty_cache();

  static size_t size_class(size_t bytes);

 private:
  struct Impl;
  Impl* impl_;  // never destroyed: the allocator outlives every tensor
};

// The allocator of device `index` (created on first use; lives until exit).
DeviceAllocator& device_allocator(int index);

}  // namespace mt::cuda_detail
