#pragma once
// Two kinds of failure:
//  - UserError: bad input (flags, files, layouts, shapes). Thrown; the app prints its one-line
//    message and exits with code 2. Raise it with MT_USER_ERROR("...{}...", args).
//  - Internal invariant violations: MT_CHECK(cond, "...") prints file:line and aborts.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace mt {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_check(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace mt

#define MT_USER_ERROR(...) throw ::mt::UserError(fmt::format(__VA_ARGS__))

#define MT_CHECK(cond, ...)                                                              \
  do {                                                                                   \
    if (!(cond)) ::mt::fail_check(__FILE__, __LINE__, #cond, fmt::format("" __VA_ARGS__)); \
  } while (0)
