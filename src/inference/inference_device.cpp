#include "inference/inference_device.h"

#include <cstdlib>

#include "core/cuda/cuda_backend.h"
#include "core/error.h"
#include "comm/mpi_communicator.h"

namespace mt {

Device inference_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  const int n = cuda_device_count();
  if (name == "cuda" && n == 0) MT_USER_ERROR("--device cuda: no CUDA device is available (use --device cpu)");
  if (n == 0) return Device::cpu();
  cuda_init_backend();
  return Device::cuda(dist::local_rank() % n);
}

}  // namespace mt
