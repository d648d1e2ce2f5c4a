#pragma once
// CUDA implementation of kernels/argmax.h (arguments checked by the dispatcher).
#include "core/tensor.h"

namespace mt::cuda {

void argmax_rows(const Tensor& logits, int64_t n_valid, const Tensor& out, Stream s);

}  // namespace mt::cuda
