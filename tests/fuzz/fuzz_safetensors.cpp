// libFuzzer target: any bytes as a .safetensors file either open as a valid file whose every
// tensor reads back within the file (the byte ranges tile the data section), or fail with a
// UserError — never crash, never read outside the mapping.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "checkpoint/safetensors.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/mt_fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    mt::SafetensorsReader r(path);
    uint64_t covered = 0;
    for (const std::string& name : r.names()) {
      const mt::SafetensorsEntry& e = r.entry(name);
      covered += e.end - e.begin;
      mt::DType dt;
      if (!mt::safetensors_dtype(e.dtype, dt)) continue;
      const mt::Tensor t = r.get(name);
      const auto* b = static_cast<const uint8_t*>(t.raw());
      uint8_t x = 0;
      for (size_t i = 0; i < t.nbytes(); ++i) x ^= b[i];  // every byte is addressable
      (void)x;
      r.release(name);
    }
    if (covered > size) __builtin_trap();  // the ranges tile the data: never more bytes than the file
  } catch (const mt::UserError&) {
  }
  return 0;
}
