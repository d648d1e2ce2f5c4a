#pragma once
// One lazily made object per CUDA device (a library handle with its plan cache): `make()` runs
// on the device's first use, under a lock, and the object lives until exit like the handles it
// holds (destroying them after the CUDA runtime has shut down would fail).
#include <mutex>

#include "core/error.h"

namespace mt::cuda {

template <class T, class Make>
T& per_device(int device, Make&& make) {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static T* objects[kMaxDevices] = {};
  MT_CHECK(device >= 0 && device < kMaxDevices, "CUDA device {}", device);
  std::lock_guard<std::mutex> lock(mu);
  if (!objects[device]) objects[device] = make();
  return *objects[device];
}

}  // namespace mt::cuda
