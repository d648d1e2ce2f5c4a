#pragma once
// Streaming detokenization: after each new token, the text it adds. Tokens need not end on
// character boundaries (byte-level BPE splits UTF-8 characters; SentencePiece's spaces depend on
// the token before), so the text is decoded from a fixed point a few tokens before the
// continuation and only what goes past the text already given is returned, holding back a
// UTF-8 character that is not complete yet. Bytes that can never form UTF-8 become U+FFFD, as
// Hugging Face's decode (and Python's bytes.decode(errors="replace")) shows them.
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"

namespace mt {

class TextStream {
 public:
  // context: the tokens before the continuation (the prompt), not returned themselves.
  TextStream(const Tokenizer& tokenizer, const std::vector<int32_t>& context);
  std::string push(int32_t id);  // the complete characters this token adds
  std::string finish();          // what was held back (an incomplete character at the very end)

 private:
  std::string complete_text(bool all) const;  // decode(window_) sanitized, up to its last whole character
  std::string take(const std::string& text);  // the part of text past given_
  const Tokenizer& tok_;
  std::vector<int32_t> window_;  // the last few context tokens, then every new one
  size_t given_ = 0;             // bytes of the sanitized text accounted for
};

}  // namespace mt
