#include "inference/served_prompts.h"

#include <fmt/format.h>

#include "inference/request_fields.h"

namespace mt {

void check_prompt(const LoadedModel& m, const std::vector<int32_t>& ids, size_t index, const char* field,
                  int64_t new_tokens, const char* new_tokens_field) {
  if (ids.empty()) throw BadRequest(field, fmt::format("{}[{}] has no tokens", field, index));
  const int64_t vocab = m.model->config().vocab_size;
  for (int32_t id : ids)
    if (id < 0 || id >= vocab)
      throw BadRequest(field, fmt::format("{}[{}]: token id {} is outside the vocabulary of {}", field, index, id, vocab));
  if (int64_t(ids.size()) + new_tokens > m.max_sequence_length)
    throw BadRequest(field, fmt::format("{}[{}]: length of prompt + {} longer than allowed ({} tokens + {} > the "
                                        "model's {} positions)",
                                        field, index, new_tokens_field, ids.size(), new_tokens, m.max_sequence_length));
}

}  // namespace mt
