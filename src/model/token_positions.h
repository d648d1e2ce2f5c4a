#pragma once
// Where a microbatch's tokens on this rank sit in their sequences, when that is not simply
// positions 0..S-1 of whole samples:
//  - context parallelism (--context-parallel-size C): each sample's S tokens are cut into 2C equal
//    chunks and context-parallel rank r holds chunks r and 2C-1-r (Megatron's load balancing of
//    causal attention: every rank gets an early and a late chunk), so the rank's T = S / C tokens
//    of a sample are two runs of S / (2C);
//  - document masks: --reset-position-ids restarts the position ids after each end-of-document
//    token, --reset-attention-mask keeps attention inside each document (Megatron's
//    get_ltor_masks_and_position_ids: a token after an end of document sees nothing up to it).
// Undefined (the default) means positions 0..T-1 of every sample, one document, as always.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mt {

// Local tokens [local, local + count) are the microbatch's tokens [global, global + count) in
// its [B, S] order (b S + s).
struct TokenRun {
  int64_t local = 0, global = 0, count = 0;
};

struct TokenPositions {
  int64_t seq = 0;         // S, the full sequence length
  Tensor seq_index;        // int32 [B, T] on the model's device: each token's index s in its sequence
  Tensor position_ids;     // int32 [B, T]: RoPE's / the learned embedding's position (undefined: seq_index)
  Tensor document;         // int32 [B, T]: the token's document within its sample (undefined: one)
  std::vector<TokenRun> runs;  // the local tokens in order, as runs of consecutive global tokens

  bool defined() const { return seq_index.defined(); }
  const Tensor& positions() const { return position_ids.defined() ? position_ids : seq_index; }
};

}  // namespace mt
