#pragma once
// Choosing each sequence's next token from its logits: greedy (temperature 0, the default), or
// a draw from softmax(logits / temperature) restricted to the top_k most likely tokens and then
// to the smallest set of most likely tokens whose probability reaches top_p (Hugging Face's and
// Megatron's top-k / top-p filters, applied in that order). Draws are deterministic: the uniform
// number of sequence b at step s is Philox(seed, stream b, counter s), so a run repeats exactly
// with the same --seed, whatever the batch around a sequence or the device.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int64_t top_k = 0;         // 0: no top-k filter
  float top_p = 1.0f;        // 1: no top-p filter
  uint64_t seed = 0;
  bool greedy() const { return temperature == 0.0f || top_k == 1; }
};

// One row of fp32 logits over the vocabulary -> a token id. `u` is the draw in (0, 1] (unused
// when greedy). Ties go to the smaller id.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, float u);

// The next token of every row of logits [B, V_padded] (any device and float dtype; columns past
// `vocab` are padding): greedy on the logits' device, sampling on the host. `step` is the index
// of the token being generated (0 for the first), which with the row picks the Philox draw.
std::vector<int32_t> sample_next_tokens(const Tensor& logits, int64_t vocab, const SamplingParams& p,
                                        int64_t step);

}  // namespace mt
