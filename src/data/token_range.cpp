#include "data/token_range.h"

#include <sys/stat.h>

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>

#include "core/error.h"
#include "core/file_io.h"

namespace mt {

namespace {

// FNV-1a, 64 bits: stable across runs and builds (std::hash is not).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

bool parse_range(const std::string& text, IndexedDataset::TokenIdRange& r) {
  const char* p = text.data();
  const char* end = p + text.size();
  auto a = std::from_chars(p, end, r.min);
  if (a.ec != std::errc() || a.ptr == end || *a.ptr != ' ') return false;
  auto b = std::from_chars(a.ptr + 1, end, r.max);
  return b.ec == std::errc() && b.ptr + 1 == end && *b.ptr == '\n' && (r.max >= r.min || (r.min == 0 && r.max == -1));
}

}  // namespace

IndexedDataset::TokenIdRange cached_token_id_range(const IndexedDataset& ds, const std::string& cache_dir) {
  if (cache_dir.empty()) return ds.token_id_range();
  const std::string bin = ds.prefix() + ".bin";
  struct stat st;
  if (::stat(bin.c_str(), &st) != 0) return ds.token_id_range();
  std::error_code ec;
  const std::string key = fmt::format("{}|{}|{}.{:09}", std::filesystem::absolute(bin, ec).lexically_normal().string(),
                                      st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  const std::string path = fmt::format("{}/{:016x}-token_id_range.txt", cache_dir, fnv1a(key));
  IndexedDataset::TokenIdRange r;
  try {
    if (std::filesystem::exists(path, ec) && parse_range(read_regular_file(path, "", 256), r)) {
      ds.set_token_id_range(r);
      return r;
    }
  } catch (const UserError&) {
    // unreadable: scanned and rewritten below
  }
  r = ds.token_id_range();
  try {
    std::filesystem::create_directories(cache_dir, ec);
    AtomicFileWriter w(path);
    const std::string text = fmt::format("{} {}\n", r.min, r.max);
    w.write(text.data(), text.size());
    w.commit();
  } catch (const UserError&) {
    // a read-only data directory: no cache, the scan is repeated next time
  }
  return r;
}

}  // namespace mt
