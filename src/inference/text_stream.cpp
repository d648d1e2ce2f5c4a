#include "inference/text_stream.h"

#include <algorithm>

#include "data/tokenizer/utf8.h"

namespace mt {
namespace {

constexpr size_t kContextTokens = 4;  // decoding starts this many tokens before the continuation

// Bytes of s that form whole UTF-8 characters, counted from the start (a trailing lead byte
// without all its continuation bytes is left out).
size_t complete_prefix(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
    const size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return back >= need ? n : n - back;
  }
  return n;  // only continuation bytes (not UTF-8): give them as they are
}

}  // namespace

TextStream::TextStream(const Tokenizer& tokenizer, const std::vector<int32_t>& context) : tok_(tokenizer) {
  const size_t from = context.size() > kContextTokens ? context.size() - kContextTokens : 0;
  window_.assign(context.begin() + long(from), context.end());
  given_ = complete_text(false).size();
}

std::string TextStream::complete_text(bool all) const {
  const std::string text = tok_.decode(window_);
  return sanitize_utf8(std::string_view(text).substr(0, all ? text.size() : complete_prefix(text)));
}

std::string TextStream::push(int32_t id) {
  window_.push_back(id);
  return take(complete_text(false));
}

std::string TextStream::finish() { return take(complete_text(true)); }

std::string TextStream::take(const std::string& text) {
  if (text.size() <= given_) return {};
  std::string out = text.substr(given_);
  given_ = text.size();
  return out;
}

}  // namespace mt
