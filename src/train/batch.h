#pragma once
// Assembling a microbatch from a sample source: samples of seq_length + 1 tokens become
// inputs tokens[:, :-1] and labels tokens[:, 1:].
#include <cstdint>

#include "core/tensor.h"
#include "data/gpt_dataset.h"

namespace mt {

struct Batch {
  Tensor tokens;     // int32 [B, T]
  Tensor labels;     // int32 [B, T]
  Tensor loss_mask;  // float32 [B, T] on the host: 1 where the label counts, 0 where it does not
                     // (--eod-mask-loss: positions whose input token is the end of document, as
                     // Megatron masks them); the loss weights are built from it on the host
};

// Samples first .. first + batch - 1 of `source` (indices wrap around its size). The loss
// mask follows source.loss_mask_token().
Batch get_batch(const SampleSource& source, int64_t first, int batch, int seq_length, Device device);

}  // namespace mt
