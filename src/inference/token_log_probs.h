#pragma once
// Log-probabilities of tokens under the model's distribution softmax(logits) over the real
// vocabulary (the raw logits: no temperature and no top-k / top-p filter, as Megatron's server
// reports them), for the logprobs of the generation server.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct TokenLogProb {
  int32_t id = 0;
  float log_prob = 0;
};

// log softmax(logits[b, :vocab])[ids[b]] for every row of logits [B, V_padded] (any device and
// float dtype; columns past `vocab` are padding). Computed on the logits' device by the fused
// cross-entropy kernel (the loss of a row is minus its target's log-probability): only B
// floats cross to the host.
std::vector<float> token_log_probs(const Tensor& logits, int64_t vocab, const std::vector<int32_t>& ids);

// The k most likely tokens of every row with their log-probabilities, most likely first (ties:
// the smaller id first). On the host, in double.
std::vector<std::vector<TokenLogProb>> top_token_log_probs(const Tensor& logits, int64_t vocab, int64_t k);

}  // namespace mt
