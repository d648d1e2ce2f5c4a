#include "inference/inference_device.h"

#include <cstdlib>

#include "core/cuda/cuda_backend.h"
#include "core/error.h"

namespace mt {
namespace {

// The local rank on this node, from the launcher's environment.
int local_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

}  // namespace

Device inference_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  const int n = cuda_device_count();
  if (name == "cuda" && n == 0) MT_USER_ERROR("--device cuda: no CUDA device is available (use --device cpu)");
  if (n == 0) return Device::cpu();
  cuda_init_backend();
  return Device::cuda(local_rank() % n);
}

}  // namespace mt
