#pragma once
// Every CUDA runtime and cuBLAS(Lt) return code is checked: on failure, print file:line, the
// call and the library's error string, then abort (an internal error, not a user error).
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

namespace mt::detail {

[[noreturn]] inline void cuda_fail(const char* file, int line, const char* expr, const char* what) {
  std::fprintf(stderr, "megatron: CUDA error at %s:%d: %s: %s\n", file, line, expr, what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace mt::detail

#define MT_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    cudaError_t mt_err_ = (expr);                                                            \
    if (mt_err_ != cudaSuccess)                                                              \
      ::mt::detail::cuda_fail(__FILE__, __LINE__, #expr, cudaGetErrorString(mt_err_));       \
  } while (0)

#define MT_CUBLAS_CHECK(expr)                                                                \
  do {                                                                                       \
    cublasStatus_t mt_st_ = (expr);                                                          \
    if (mt_st_ != CUBLAS_STATUS_SUCCESS)                                                     \
      ::mt::detail::cuda_fail(__FILE__, __LINE__, #expr, cublasGetStatusString(mt_st_));     \
  } while (0)

// After a kernel launch: catches bad launch configurations (not asynchronous faults).
#define MT_CUDA_CHECK_LAUNCH() MT_CUDA_CHECK(cudaGetLastError())

namespace mt {

// Makes `device` current for the guard's lifetime (ops run on their tensors' device whatever
// the caller's current device is).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device) {
    MT_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) MT_CUDA_CHECK(cudaSetDevice(device));
    else prev_ = -1;
  }
  ~CudaDeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

}  // namespace mt
