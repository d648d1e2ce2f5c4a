#pragma once
// Host allocator: 64-byte aligned blocks, cached by size so that the per-microbatch
// activations of a training step reuse memory instead of faulting in fresh pages.
#include <cstddef>

#include "core/device.h"

namespace mt {

struct Allocator {
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual size_t bytes_in_use() const = 0;
  virtual size_t peak_bytes() const = 0;
};

Allocator& host_allocator();
// The block the host allocator hands out for a request of `bytes` (its size class), so that
// memory estimates can be compared with what it measures.
size_t host_block_bytes(size_t bytes);
// Starts a new peak at the bytes in use now, so that a run (a test in a longer process) measures its own.
void reset_host_peak_bytes();
// The allocator for a device; CUDA devices are served by the CUDA backend when it is built
// (register_device_allocator), otherwise asking for one is an error.
Allocator& allocator_for(Device d);
void register_device_allocator(Allocator* (*factory)(int device_index));

}  // namespace mt
