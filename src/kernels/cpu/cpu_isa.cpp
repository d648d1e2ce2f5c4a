// The CPU path (cpu_isa.h): what the CPU supports, capped by the environment, read once.
#include "kernels/cpu_isa.h"

#include <cstdlib>
#include <string_view>

#include "core/error.h"

namespace mt {
namespace {

CpuIsa supported() {
#if defined(__x86_64__)
  // The AVX-512 path also runs AVX2 code (swiglu_avx2.h), which every AVX-512 CPU has.
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return CpuIsa::kPortable;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    return CpuIsa::kAvx512;
  return CpuIsa::kAvx2;
#endif
  return CpuIsa::kPortable;
}

CpuIsa requested() {
  if (const char* e = std::getenv("MT_CPU_ISA"); e && *e) {
    const std::string_view v(e);
    if (v == "avx512") return CpuIsa::kAvx512;
    if (v == "avx2") return CpuIsa::kAvx2;
    if (v == "portable") return CpuIsa::kPortable;
    MT_USER_ERROR("MT_CPU_ISA={}: expected avx512, avx2 or portable", v);
  }
  if (const char* e = std::getenv("MT_CPU_AVX512"); e && std::string_view(e) == "0") return CpuIsa::kPortable;
  return CpuIsa::kAvx512;
}

}  // namespace

CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    const CpuIsa want = requested(), have = supported();
    return int(want) < int(have) ? want : have;
  }();
  return isa;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "AVX-512";
    case CpuIsa::kAvx2:
      return "AVX2";
    case CpuIsa::kPortable:
      break;
  }
  return "portable";
}

}  // namespace mt
