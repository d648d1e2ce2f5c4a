#pragma once
// CPU implementation of kernels/argmax.h (arguments checked by the dispatcher).
#include "core/tensor.h"

namespace mt::cpu {

void argmax_rows(const Tensor& logits, int64_t n_valid, const Tensor& out);

}  // namespace mt::cpu
