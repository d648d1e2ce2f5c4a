#pragma once
// UTF-8 helpers for the tokenizers.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace mt {

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view s);

// `s` with each maximal ill-formed subsequence replaced by U+FFFD, exactly as Python's
// bytes.decode("utf-8", "replace") does (Unicode's "substitution of maximal subparts").
std::string sanitize_utf8(std::string_view s);

// Appends the UTF-8 encoding of code point `cp` to `out`.
void append_utf8(uint32_t cp, std::string& out);

// Decodes one code point of valid UTF-8 at s[i], advancing i.
uint32_t next_code_point(std::string_view s, size_t& i);

// GPT-2's byte-level alphabet (bytes_to_unicode() of OpenAI's encoder.py): printable bytes
// map to themselves, the other 68 to U+0100 + k in byte order. byte_to_unicode()[b] is the
// code point of byte b; unicode_to_byte(cp) is the inverse, or -1 for a code point outside it.
const std::array<uint32_t, 256>& byte_to_unicode();
int unicode_to_byte(uint32_t cp);

}  // namespace mt
