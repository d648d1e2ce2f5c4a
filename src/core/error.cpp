#include "core/error.h"

#include <cstdio>
#include <cstdlib>

namespace mt {

void fail_check(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "megatron: internal error at %s:%d: check failed: %s%s%s\n", file, line, cond,
               msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace mt
