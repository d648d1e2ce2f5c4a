#pragma once
// The generation server's prompts as token ids, checked against the model before anything runs:
// not empty, every id inside the vocabulary, and room for the new tokens within the model's
// positions. A failure is a BadRequest naming the request field.
#include <cstdint>
#include <vector>

#include "inference/model_loader.h"

namespace mt {

// ids: prompt number `index` (0-based) of the request field `field`; new_tokens: how many
// tokens the request asks for, by its field `new_tokens_field`.
void check_prompt(const LoadedModel& m, const std::vector<int32_t>& ids, size_t index, const char* field,
                  int64_t new_tokens, const char* new_tokens_field);

}  // namespace mt
