#pragma once
// Generation state of a model chunk (Megatron-Core's inference context): the key/value cache of
// each layer, and what one inference step hands its layers.
//
// Sequence b's token at position j lives in slot j of row b of every layer's cache, so sequences
// of different lengths share one batch, each with its own length (no left padding and no
// attention mask: kernels/kv_cache.h reads each row up to its length, and RoPE and learned
// positions use each sequence's own positions). A prompt batch is right-padded to its longest prompt; the padding tokens' keys and
// values land in slots past their sequence's length, where the next real token overwrites them
// before anything reads them.
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/rotary.h"

namespace mt {

struct KVCache {
  int64_t batch = 0, capacity = 0;  // sequences, and slots (positions) per sequence
  // Per layer of the chunk: [batch, capacity, query groups / TP, head_dim], the model's dtype.
  std::vector<Tensor> key, value;
  RotaryTables rope;              // RoPE's angles for positions [0, capacity) (RoPE models)
  std::vector<int32_t> lengths;   // tokens each sequence holds so far (host)
};

// Built by GPTModel::forward_inference for its layers.
struct InferenceStep {
  Tensor start;             // int32 [B] on the model's device: each sequence's length before this step
  bool from_empty = false;  // every start is 0 (a prefill): the causal training kernel applies
  Tensor cos, sin;          // RoPE's angles at this step's tokens' positions, fp32 [B T, R/2]
};

}  // namespace mt
