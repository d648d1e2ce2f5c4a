// Grouped GEMM on CUDA (kernels/grouped_gemm.h): not yet grouped; every call returns false and
// the dispatcher runs one gemm per group.
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {

bool grouped_gemm_forward(const Tensor&, const Tensor&, const std::vector<int64_t>&, const Tensor&, Stream) {
  return false;
}
bool grouped_gemm_dgrad(const Tensor&, const Tensor&, const std::vector<int64_t>&, const Tensor&, Stream) {
  return false;
}
bool grouped_gemm_wgrad(const Tensor&, const Tensor&, const std::vector<int64_t>&, const Tensor&, float, Stream) {
  return false;
}

}  // namespace mt::cuda
