#pragma once
// Greedy decoding's choice: per row of logits [N, V] (float), the column of the largest of the
// first n_valid values (the vocabulary without its padding), the first one on ties (as
// torch.argmax), into out int32 [N]. NaN never wins. Bytes: reads each row once.
#include <cstdint>

#include "core/tensor.h"

namespace mt {

void argmax_rows(const Tensor& logits, int64_t n_valid, const Tensor& out, Stream s = {});

}  // namespace mt
