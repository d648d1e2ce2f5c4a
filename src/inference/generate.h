#pragma once
// The generation loop (Megatron's generate_tokens_probs_and_return_on_first_stage, without the
// pipeline): the prompts go through the model in one prefill, then every unfinished sequence
// gets one token per step from the key/value cache, until it emits an end-of-sequence id or has
// max_new_tokens new tokens. Each token is handed to a callback as soon as it is chosen, so a
// caller can stream it. Under tensor parallelism every rank of the model's group calls it with
// the same prompts and options; the logits are gathered, so all ranks choose the same tokens.
#include <cstdint>
#include <functional>
#include <vector>

#include "inference/sampling.h"
#include "model/gpt_model.h"

namespace mt {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  SamplingParams sampling;
  std::vector<int32_t> eos_ids;  // a sequence stops after emitting one (it is kept in the output)
};

struct GenerationTiming {
  int64_t batch = 0, prompt_tokens = 0;  // prompt_tokens: the longest prompt
  double prefill_ms = 0;                 // from the start until every first token is on the host
  int64_t decode_steps = 0;              // steps after the prefill
  int64_t decode_tokens = 0;             // tokens those steps produced for unfinished sequences
  double decode_ms = 0;
};

struct GenerationResult {
  std::vector<std::vector<int32_t>> tokens;  // per prompt, the new tokens
  GenerationTiming timing;
};

// on_token(prompt index, token): called for every new token, in step order and prompt order
// within a step. Prompts must be non-empty, and the longest prompt plus max_new_tokens must fit
// the model's positions (the caller checks; see GPTModel::allocate_kv_cache).
GenerationResult generate(const GPTModel& model, const std::vector<std::vector<int32_t>>& prompts,
                          const GenerationOptions& options,
                          const std::function<void(size_t, int32_t)>& on_token = {});

}  // namespace mt
