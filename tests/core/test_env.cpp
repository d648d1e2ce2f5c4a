// env_switch: MT_* on/off variables read as 1/0, the default when unset or empty, and one clear
// error naming the variable otherwise.
#include "core/env.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace mt {
namespace {

constexpr const char* kName = "MT_TEST_ENV_SWITCH";

TEST(EnvSwitch, UnsetOrEmptyGivesTheDefault) {
  ::unsetenv(kName);
  EXPECT_TRUE(env_switch(kName, true));
  EXPECT_FALSE(env_switch(kName, false));
  ::setenv(kName, "", 1);
  EXPECT_TRUE(env_switch(kName, true));
  ::unsetenv(kName);
}

TEST(EnvSwitch, OneAndZeroOverrideTheDefault) {
  ::setenv(kName, "1", 1);
  EXPECT_TRUE(env_switch(kName, false));
  ::setenv(kName, "0", 1);
  EXPECT_FALSE(env_switch(kName, true));
  ::unsetenv(kName);
}

TEST(EnvSwitch, AnyOtherValueIsAUserErrorNamingTheVariable) {
  ::setenv(kName, "yes", 1);
  try {
    env_switch(kName, true);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(), "MT_TEST_ENV_SWITCH=yes: expected 1 or 0");
  }
  ::unsetenv(kName);
}

}  // namespace
}  // namespace mt
