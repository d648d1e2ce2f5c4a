#pragma once
// The text of one sequence's continuation as its tokens come, for the generation server: each
// token's text (through TextStream, so characters split across tokens come out whole), where in
// the text each token begins, and where the first of the request's stop strings appears.
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "inference/text_stream.h"

namespace mt {

class CompletionText {
 public:
  // context: the tokens before the continuation (the prompt). Empty stop strings are ignored.
  CompletionText(const Tokenizer& tokenizer, const std::vector<int32_t>& context, std::vector<std::string> stops = {});
  void push(int32_t id);  // appends the token's text
  void finish();          // appends what was held back (an incomplete character at the end)
  const std::string& text() const { return text_; }
  // Byte offset in text() at which token i's text begins.
  const std::vector<size_t>& token_offsets() const { return offsets_; }
  // Byte offset in text() of the earliest stop string; std::string::npos while none appears.
  size_t stop_at() const { return stop_at_; }

 private:
  TextStream stream_;
  std::vector<std::string> stops_;
  size_t longest_stop_ = 0;
  std::string text_;
  std::vector<size_t> offsets_;
  size_t stop_at_ = std::string::npos;
  void append(const std::string& s);
};

// Characters (Unicode code points, as Python counts a str) in the first `bytes` bytes of UTF-8 text.
size_t utf8_chars(const std::string& text, size_t bytes);

}  // namespace mt
