// The CPU path (kernels/cpu_isa.h) follows MT_CPU_ISA, so the forced test runs of
// tests/CMakeLists.txt (kernels_avx2, kernels_portable) really run the path they name.
#include <cstdlib>
#include <string_view>

#include <gtest/gtest.h>

#include "kernels/cpu_isa.h"

namespace mt {
namespace {

TEST(CpuIsa, FollowsTheEnvironmentWhereTheCpuAllows) {
  const CpuIsa isa = cpu_isa();
  const char* want = std::getenv("MT_CPU_ISA");
  if (!want || !*want) {
    const char* old = std::getenv("MT_CPU_AVX512");
    if (old && std::string_view(old) == "0") {
      EXPECT_EQ(isa, CpuIsa::kPortable);  // the older switch's alias
    }
    GTEST_SKIP() << "best path: " << cpu_isa_name();
  }
  const std::string_view w(want);
#if defined(__x86_64__)
  if (w == "avx512" && __builtin_cpu_supports("avx512f")) {
    EXPECT_EQ(isa, CpuIsa::kAvx512);
  }
  if (w == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_EQ(isa, CpuIsa::kAvx2);
  }
#endif
  if (w == "portable") {
    EXPECT_EQ(isa, CpuIsa::kPortable);
  }
  if (w == "avx2") {
    EXPECT_NE(isa, CpuIsa::kAvx512);  // never above the path asked for
  }
}

TEST(CpuIsa, NamesThePath) {
  EXPECT_STREQ(cpu_isa_name(CpuIsa::kAvx512), "AVX-512");
  EXPECT_STREQ(cpu_isa_name(CpuIsa::kAvx2), "AVX2");
  EXPECT_STREQ(cpu_isa_name(CpuIsa::kPortable), "portable");
}

}  // namespace
}  // namespace mt
