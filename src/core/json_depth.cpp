#include "core/json_depth.h"

#include "core/error.h"

namespace mt {

void check_json_depth(const std::string& text, const std::string& source, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        MT_USER_ERROR("{}: JSON nested deeper than {} levels (at byte {})", source, max_depth, i);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

}  // namespace mt
