// libFuzzer target: any bytes as a .idx (beside a fixed 256-byte .bin) either open as a valid
// indexed dataset whose every sequence reads back, or fail with a UserError — never crash.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/indexed_dataset.h"

namespace {

const std::string& prefix() {
  static const std::string p = [] {
    std::string s = "/tmp/mt_fuzz_idx_" + std::to_string(::getpid());
    std::vector<uint8_t> bin(256);
    for (size_t i = 0; i < bin.size(); ++i) bin[i] = uint8_t(i * 7);
    FILE* f = std::fopen((s + ".bin").c_str(), "wb");
    std::fwrite(bin.data(), 1, bin.size(), f);
    std::fclose(f);
    return s;
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& p = prefix();
  FILE* f = std::fopen((p + ".idx").c_str(), "wb");
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    mt::IndexedDataset ds(p);
    std::vector<int32_t> buf;
    for (int64_t i = 0; i < ds.num_sequences(); ++i) buf = ds.read(i);
    for (int64_t d = 0; d < ds.num_documents(); ++d) (void)ds.document_range(d);
    (void)ds.max_token_id();
  } catch (const mt::UserError&) {
  }
  return 0;
}
