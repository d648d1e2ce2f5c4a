// libFuzzer target: any bytes as one of the dataset index cache's .npy files (GPTDataset's
// document, sample and shuffle indices) either read as an array of the asked type and shape or
// are declined (std::nullopt: the cache is rebuilt) — never crash or read past the file.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "data/npy.h"

// A volatile store the optimiser must keep, so the reads of every element stay in the binary.
static volatile int64_t sink;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/mt_fuzz_npy_" + std::to_string(::getpid()) + ".npy";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  int64_t sum = 0;
  if (auto a = mt::read_npy_i32(path))
    for (int32_t v : a->data) sum += v;
  for (int64_t cols : {0, 2})
    if (auto a = mt::read_npy_i64(path, cols))
      for (int64_t v : a->data) sum ^= v;
  sink = sum;  // every element read: the loads cannot be dropped
  return 0;
}
