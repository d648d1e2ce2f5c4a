#pragma once
// OpenAI's completions API (POST /v1/completions; Megatron's server has it at /completions),
// served by `megatron serve`. The request:
//   {"prompt": str | [str] | [int] (one prompt of token ids) | [[int]] (1 to 128 prompts),
//    "max_tokens": int >= 0 (16; 0 needs echo), "temperature": [0, 100] (1.0; 0 is greedy),
//    "top_p": (0, 1] (1.0), "top_k": int (ours; 0 or -1: none), "seed": int >= 0,
//    "stop": str | [str], "logprobs": 0..20 (the number of most likely alternatives per token),
//    "echo": bool (the prompt leads the text, and its tokens the logprobs), "add_BOS": bool (ours),
//    "model", "user": ignored; "n", "best_of": only 1; "stream": only false}
// The answer: {"id", "object": "text_completion", "created", "model", "choices": [{"text", "index",
// "logprobs": null | {"tokens", "token_logprobs", "top_logprobs", "text_offset"}, "finish_reason":
// "stop" (an end-of-sequence id, left out of the text, or a stop string, cut with what follows)
// | "length"}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}.
// text_offset counts characters of prompt + completion; the first prompt token's log-probability
// is null (nothing comes before it).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "inference/model_loader.h"

namespace mt {

struct CompletionsContext {
  std::string model_name;  // "model" of the answer
  std::string id;          // "id" of the answer
  int64_t created = 0;     // "created": Unix seconds
  uint64_t fresh_seed = 0; // the sampling seed when the request gives none
};

// Throws BadRequest naming the field at fault.
nlohmann::json completions_api(const nlohmann::json& request, const LoadedModel& m, const CompletionsContext& c);

}  // namespace mt
