#pragma once
// A PCRE2 regular expression in UTF + UCP mode (\p{L}, \p{N}, \s are Unicode-aware; look-ahead
// works), JIT-compiled when the platform allows. Used for the pre-tokenizer splits.
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mt {

class Regex {
 public:
  // UserError naming `what` (e.g. "tokenizer.json pre_tokenizer") on a pattern PCRE2 rejects.
  // `literal`: the pattern is a plain string to find.
  Regex(std::string_view pattern, bool literal, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Splits valid UTF-8 `text` into the matches and the gaps between them, in order (Hugging
  // Face's SplitDelimiterBehavior::Isolated): calls piece(begin, end) for each non-empty one.
  template <class F> void split_isolated(std::string_view text, F&& piece) const {
    size_t pos = 0, search = 0, b, e;
    while (search < text.size() && find(text, search, b, e)) {
      if (e == b) {  // an empty match splits nothing: look again one character on
        if (b >= text.size()) break;
        search = next_char(text, b);
        continue;
      }
      if (b > pos) piece(pos, b);
      piece(b, e);
      pos = search = e;
    }
    if (pos < text.size()) piece(pos, text.size());
  }

 private:
  bool find(std::string_view text, size_t start, size_t& begin, size_t& end) const;
  static size_t next_char(std::string_view text, size_t i);
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace mt
