#pragma once
// Assembling a microbatch from a sample source: samples of seq_length + 1 tokens become
// inputs tokens[:, :-1] and labels tokens[:, 1:] (Megatron's get_batch), then this
// context-parallel rank's share of them (get_batch_on_this_cp_rank).
#include <cstdint>

#include "core/tensor.h"
#include "data/gpt_dataset.h"
#include "model/token_positions.h"

namespace mt {

struct Batch {
  Tensor tokens;     // int32 [B, T]
  Tensor labels;     // int32 [B, T]
  Tensor loss_mask;  // float32 [B, T] on the host: 1 where the label counts, 0 where it does not
                     // (--eod-mask-loss: positions whose input token is the end of document, as
                     // Megatron masks them); the loss weights are built from it on the host
  TokenPositions positions;  // defined with context parallelism or document masks (T = S / CP)
};

struct BatchLayout {
  // Megatron's get_ltor_masks_and_position_ids over the input tokens: --reset-position-ids
  // restarts positions after each `eod`; --reset-attention-mask confines attention to each
  // document (the end-of-document token belongs to the document it ends).
  bool reset_position_ids = false, reset_attention_mask = false;
  int32_t eod = -1;
  // Context parallelism: each sample's S tokens are cut into 2 CP chunks of S / (2 CP) and rank
  // cp_rank keeps chunks cp_rank and 2 CP - 1 - cp_rank (S must be divisible by 2 CP).
  int cp_size = 1, cp_rank = 0;
  bool explicit_positions() const { return cp_size > 1 || reset_position_ids || reset_attention_mask; }
};

// Samples first .. first + batch - 1 of `source` (indices wrap around its size). The loss
// mask follows source.loss_mask_token().
Batch get_batch(const SampleSource& source, int64_t first, int batch, int seq_length, Device device,
                const BatchLayout& layout = {});

}  // namespace mt
