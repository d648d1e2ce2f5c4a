#pragma once
// The generation loop (Megatron's generate_tokens_probs_and_return_on_first_stage, without the
// pipeline): the prompts go through the model in one prefill, then every unfinished sequence
// gets one token per step from the key/value cache, until it emits an end-of-sequence id or has
// max_new_tokens new tokens. Each token is handed to a callback as soon as it is chosen, so a
// caller can stream it; on request each new token's log-probability (and the most likely
// alternatives) comes with it, for the generation server. Under tensor parallelism every rank of the model's group calls it with
// the same prompts and options; the logits are gathered, so all ranks choose the same tokens.
#include <cstdint>
#include <functional>
#include <vector>

#include "inference/sampling.h"
#include "inference/token_log_probs.h"
#include "model/gpt_model.h"

namespace mt {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  SamplingParams sampling;
  std::vector<int32_t> eos_ids;  // a sequence stops after emitting one (it is kept in the output)
  bool return_log_probs = false;  // fill GenerationResult::log_probs
  int64_t top_log_probs = 0;      // fill GenerationResult::top_log_probs with this many per token
  // A caller's own end (a stop string): asked after each new token of sequence b with its new
  // tokens so far; true ends the sequence there (the token is kept).
  std::function<bool(size_t, const std::vector<int32_t>&)> stop;
};

// Why a sequence ended: an end-of-sequence id, max_new_tokens, or options.stop.
enum class FinishReason { kEndOfSequence, kLength, kStop };

struct GenerationTiming {
  int64_t batch = 0, prompt_tokens = 0;  // prompt_tokens: the longest prompt
  double prefill_ms = 0;                 // from the start until every first token is on the host
  int64_t decode_steps = 0;              // steps after the prefill
  int64_t decode_tokens = 0;             // tokens those steps produced for unfinished sequences
  double decode_ms = 0;
};

struct GenerationResult {
  std::vector<std::vector<int32_t>> tokens;  // per prompt, the new tokens
  std::vector<FinishReason> finish;          // per prompt
  // With return_log_probs: per prompt, log p(token | everything before) of each new token under
  // softmax of the raw logits (no temperature or filters).
  std::vector<std::vector<float>> log_probs;
  // With top_log_probs = k: per prompt and new token, the k most likely tokens at that step.
  std::vector<std::vector<std::vector<TokenLogProb>>> top_log_probs;
  GenerationTiming timing;
};

// on_token(prompt index, token): called for every new token, in step order and prompt order
// within a step. Prompts must be non-empty, and the longest prompt plus max_new_tokens must fit
// the model's positions (the caller checks; see GPTModel::allocate_kv_cache).
GenerationResult generate(const GPTModel& model, const std::vector<std::vector<int32_t>>& prompts,
                          const GenerationOptions& options,
                          const std::function<void(size_t, int32_t)>& on_token = {});

}  // namespace mt
