#pragma once
// Megatron's text generation server API (megatron/inference/text_generation_server.py,
// MegatronGenerate.put), served by `megatron serve` at PUT /api. The request:
//   {"prompts": [str, ...] (1 to 128), "tokens_to_generate": int >= 0 (64),
//    "temperature": (0, 100] (1.0), "top_k": 0..1000 (0), "top_p": [0, 1] (0.0; not with top_k),
//    "logprobs": bool (false; tokens_to_generate 0 needs it), "random_seed": int >= 0,
//    "add_BOS": bool (false; needed for an empty prompt), "stop_on_eol", "stop_on_double_eol",
//    "no_log": bool}
// Megatron's sampling: top_k 1 is greedy; top_k 0 and top_p 0 sample the whole distribution.
// The answer: {"text": [prompt + continuation], "segments": [[each token's text]], "tokens":
// [[prompt and new token ids]], "logprobs": [[log p of every token after the first]] or null}.
// Generation stops at the model's end-of-sequence ids (kept in the output), after a newline
// with stop_on_eol (two with stop_on_double_eol), or after tokens_to_generate tokens.
// Beam search (beam_width), top_p_decay / top_p_bound and prevent_newline_after_colon are not
// supported: asking for them is a BadRequest, like any ill-typed or out-of-range field.
#include <nlohmann/json.hpp>

#include <cstdint>

#include "inference/model_loader.h"

namespace mt {

// fresh_seed: the sampling seed when the request gives no random_seed. Throws BadRequest.
nlohmann::json megatron_generate_api(const nlohmann::json& request, const LoadedModel& m, uint64_t fresh_seed);

}  // namespace mt
