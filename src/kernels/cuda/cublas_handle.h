#pragma once
// The device's cuBLAS handle for the CUDA backend's cuBLAS calls beyond gemm.cu (grouped_gemm.cu):
// gemm.cu's per-device handle with its 32 MiB workspace, so a device has one of each.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <mutex>

#include "core/dtype.h"

namespace mt::cuda {

// The handle of `device` (which must be current: the first call makes the handle there) bound to
// stream `st` and to the workspace, with the lock that guards both: hold `lock` for as long as
// cuBLAS is called through `handle`.
struct CublasOnStream {
  std::unique_lock<std::mutex> lock;
  cublasHandle_t handle = nullptr;
};
CublasOnStream cublas_on_stream(int device, cudaStream_t st);
// cuBLAS's type for a float dtype (fp32, bf16, fp16).
cudaDataType_t cuda_data_type(DType t);

}  // namespace mt::cuda
