#pragma once
// Assembling a microbatch from a sample source: samples of seq_length + 1 tokens become
// inputs tokens[:, :-1] and labels tokens[:, 1:].
#include <cstdint>

#include "core/tensor.h"
#include "data/gpt_dataset.h"

namespace mt {

struct Batch {
  Tensor tokens;  // int32 [B, T]
  Tensor labels;  // int32 [B, T]
};

// Samples first .. first + batch - 1 of `source` (indices wrap around its size).
Batch get_batch(const SampleSource& source, int64_t first, int batch, int seq_length, Device device);

}  // namespace mt
