// libFuzzer target for the Megatron-LM checkpoint readers: any bytes either decode or fail with a
// UserError — never crash, never read outside the input. Bytes starting "PK" are a torch.save
// archive (zip_reader + torch_pickle: every tensor it holds is materialized); others are a pickle
// (decoded, every object visited) and then a torch.distributed.checkpoint .metadata file
// (TorchDistReader: every tensor read, its chunk files being absent).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/torch_dist_reader.h"
#include "checkpoint/torch_pickle.h"
#include "core/error.h"

namespace {

// Every object reachable from `root`, once each (pickles may hold cycles).
std::vector<const mt::PyObj*> reachable(const mt::PyObj* root) {
  std::vector<const mt::PyObj*> out, todo{root};
  std::set<const mt::PyObj*> seen;
  while (!todo.empty()) {
    const mt::PyObj* o = todo.back();
    todo.pop_back();
    if (!o || !seen.insert(o).second) continue;
    out.push_back(o);
    for (const mt::PyObj* x : o->items) todo.push_back(x);
    for (const auto& [k, v] : o->dict) {
      todo.push_back(k);
      todo.push_back(v);
    }
    todo.push_back(o->callable);
    todo.push_back(o->state);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.substr(0, 2) == "PK") {
    try {
      const mt::TorchSaveFile f(data, size, "fuzz.pt");
      for (const mt::PyObj* o : reachable(f.root())) {
        if (o->kind != mt::PyObj::Tensor) continue;
        try {
          const mt::Tensor t = f.tensor(o, "t");
          const auto* b = static_cast<const uint8_t*>(t.raw());
          uint8_t x = 0;
          for (size_t i = 0; i < t.nbytes(); ++i) x ^= b[i];  // every byte is addressable
          (void)x;
        } catch (const mt::UserError&) {
        }
      }
    } catch (const mt::UserError&) {
    }
    return 0;
  }
  try {
    const mt::Pickle p(bytes, "fuzz.pkl");
    (void)reachable(p.root()).size();
    (void)p.root()->get("args");
  } catch (const mt::UserError&) {
    return 0;
  }
  static const std::string dir = "/tmp/mt_fuzz_torch_dist_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  FILE* f = std::fopen((dir + "/.metadata").c_str(), "wb");
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const mt::TorchDistReader r(dir);
    for (const auto& [name, m] : r.tensors()) {
      try {
        r.read(name);
      } catch (const mt::UserError&) {
      }
    }
  } catch (const mt::UserError&) {
  }
  return 0;
}
