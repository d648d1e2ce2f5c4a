#pragma once
// Grouped GEMM: the experts' linear layers over tokens sorted by expert. Group g owns rows
// [offset_g, offset_g + counts[g]) of the token-side operands (offset_g = counts[0] + ... +
// counts[g-1]) and the weight w[g] of w [G, N, K] (G contiguous [N, K] matrices, PyTorch's
// Linear layout):
//   forward  y_g  = x_g w_g^T          x [M, K], y [M, N]          (M = sum of counts)
//   dgrad    dx_g = dy_g w_g           dy [M, N], dx [M, K]
//   wgrad    dw_g = dy_g^T x_g + beta dw_g     dw fp32 [G, N, K] (main grads; beta 0 overwrites,
//                                              also for a group without rows)
// counts live on the host (the dispatcher knows them: they sized the buffers), so no launch waits
// on the device. Operands are contiguous, one float dtype (the weights' gradient fp32), fp32
// accumulation. Cost: 2 M N K FLOPs each. CPU: one gemm per group; CUDA: one grouped launch per
// call where cuBLAS has it (forward and dgrad; wgrad with fp32 operands: cuBLAS's grouped GEMM has
// no bf16/fp16 x bf16/fp16 -> fp32), else one cuBLASLt GEMM per non-empty group.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mt {

void grouped_gemm_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& y,
                          Stream s = {});
void grouped_gemm_dgrad(const Tensor& dy, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& dx,
                        Stream s = {});
void grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const std::vector<int64_t>& counts, const Tensor& dw,
                        float beta = 1.0f, Stream s = {});

}  // namespace mt
