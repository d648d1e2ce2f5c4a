#pragma once
// JSON we parse comes from files a user (or an attacker) gives us. Parsers and the code walking
// the result recurse per nesting level, so a file nested 100,000 deep overflows the stack: the
// text's depth is checked first, in one pass without recursion.
#include <string>

namespace mt {

// UserError naming `source` when `text` nests arrays/objects deeper than `max_depth` (strings,
// with their escapes, are skipped). Says nothing about validity otherwise.
void check_json_depth(const std::string& text, const std::string& source, int max_depth = 128);

}  // namespace mt
