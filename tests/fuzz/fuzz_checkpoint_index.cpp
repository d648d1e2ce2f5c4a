// libFuzzer target: any bytes as a checkpoint's metadata.json (the index: files, tensors, their
// pieces, byte ranges and checksums, and where common.json is) beside a real shard file and
// common.json written once by save_checkpoint: opening the checkpoint and loading every tensor it
// lists either works or fails with a UserError — never crashes, reads outside a file, or leaves
// the checkpoint directory. The first input byte, when it is '#', makes the rest common.json
// instead (with metadata.json's size and checksum of it fixed up), so its parsing is fuzzed too.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/crc32c.h"
#include "core/error.h"

namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::string dir, iter_dir, metadata, common;
};

std::string slurp(const std::string& path) {
  std::string s;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
    std::fclose(f);
  }
  return s;
}

void spill(const std::string& path, const void* data, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (n) std::fwrite(data, 1, n, f);
  std::fclose(f);
}

const Fixture& fixture() {
  static const Fixture fx = [] {
    Fixture x;
    x.dir = "/tmp/mt_fuzz_ckpt_" + std::to_string(::getpid());
    fs::remove_all(x.dir);
    mt::Tensor a = mt::Tensor::empty({4, 6}, mt::DType::F32), b = mt::Tensor::empty({5}, mt::DType::BF16);
    for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = float(i) * 0.5f;
    for (int64_t i = 0; i < b.numel(); ++i) b.data<uint16_t>()[i] = uint16_t(0x3f80 + i);
    // Two pieces of "w" (rows 0-1 and 2-3) and a whole "b", in one shard file.
    std::vector<mt::ShardedTensor> shards = {mt::ShardedTensor::slice("w", a.flat_slice(0, 12, {2, 6}), {4, 6}, 0, 0),
                                             mt::ShardedTensor::slice("w", a.flat_slice(12, 12, {2, 6}), {4, 6}, 0, 2),
                                             mt::ShardedTensor::whole("b", b)};
    mt::save_checkpoint(x.dir, 7, shards, nlohmann::json{{"iteration", 7}, {"args", {{"num_layers", 1}}}}, {});
    x.iter_dir = x.dir + "/" + mt::iteration_dir_name(7);
    x.metadata = slurp(x.iter_dir + "/metadata.json");
    x.common = slurp(x.iter_dir + "/common.json");
    // MT_FUZZ_WRITE_SEEDS=DIR: the pristine files as seeds (tests/fuzz/corpus_checkpoint_index).
    if (const char* seeds = std::getenv("MT_FUZZ_WRITE_SEEDS")) {
      spill(std::string(seeds) + "/metadata.json", x.metadata.data(), x.metadata.size());
      const std::string c = "#" + x.common;
      spill(std::string(seeds) + "/common.json", c.data(), c.size());
    }
    return x;
  }();
  return fx;
}

void try_load(const std::string& dir) {
  mt::CheckpointReader ck(dir, -1, nullptr);
  std::vector<mt::ShardedTensor> requests;
  for (const auto& [name, info] : ck.tensors()) {
    int64_t n = 1;
    for (int64_t d : info.global_shape) n = d >= 0 && d < (1 << 16) && n * d < (1 << 16) ? n * d : -1;
    if (n < 0 || info.global_shape.size() > 4) continue;  // the reader checks sizes against files, not memory
    requests.push_back(mt::ShardedTensor::whole(name, mt::Tensor::empty(info.global_shape, info.dtype)));
  }
  (void)ck.load(requests, 1);
  ck.verify_all();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fx = fixture();
  std::string meta = fx.metadata, common = fx.common;
  if (size > 0 && data[0] == '#') {
    common.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
      nlohmann::json m = nlohmann::json::parse(meta);
      m["common"]["bytes"] = common.size();
      m["common"]["crc32c"] = mt::crc32c_hex(mt::crc32c(common.data(), common.size()));
      meta = m.dump();
    } catch (const nlohmann::json::exception&) {
    }
  } else {
    meta.assign(reinterpret_cast<const char*>(data), size);
  }
  spill(fx.iter_dir + "/metadata.json", meta.data(), meta.size());
  spill(fx.iter_dir + "/common.json", common.data(), common.size());
  try {
    try_load(fx.iter_dir);
  } catch (const mt::UserError&) {
  }
  return 0;
}
