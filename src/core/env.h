#pragma once
// Environment switches: MT_* variables that turn a behaviour on or off.
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace mt {

// The value of the 0/1 switch `name`: `unset` when it is absent or empty; anything but "0" or "1"
// is a user error naming the variable.
inline bool env_switch(const char* name, bool unset) {
  const char* e = std::getenv(name);
  if (!e || !*e) return unset;
  if (std::strcmp(e, "1") == 0) return true;
  if (std::strcmp(e, "0") == 0) return false;
  MT_USER_ERROR("{}={}: expected 1 or 0", name, e);
}

}  // namespace mt
