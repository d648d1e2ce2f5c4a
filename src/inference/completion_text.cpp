#include "inference/completion_text.h"

#include <algorithm>

namespace mt {

CompletionText::CompletionText(const Tokenizer& tokenizer, const std::vector<int32_t>& context,
                               std::vector<std::string> stops)
    : stream_(tokenizer, context) {
  for (std::string& s : stops)
    if (!s.empty()) {
      longest_stop_ = std::max(longest_stop_, s.size());
      stops_.push_back(std::move(s));
    }
}

void CompletionText::push(int32_t id) {
  offsets_.push_back(text_.size());
  append(stream_.push(id));
}

void CompletionText::finish() { append(stream_.finish()); }

void CompletionText::append(const std::string& s) {
  if (s.empty()) return;
  // A stop string that ends in the new text starts at most longest - 1 bytes before it.
  const size_t from = text_.size() > longest_stop_ ? text_.size() - longest_stop_ + 1 : 0;
  text_ += s;
  if (stop_at_ != std::string::npos) return;
  for (const std::string& stop : stops_) stop_at_ = std::min(stop_at_, text_.find(stop, from));
}

size_t utf8_chars(const std::string& text, size_t bytes) {
  size_t n = 0;
  for (size_t i = 0; i < std::min(bytes, text.size()); ++i)
    n += (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;  // every byte but a continuation byte
  return n;
}

}  // namespace mt
