#include "checkpoint/zip_reader.h"

#include <cstring>

#include "core/error.h"

namespace mt {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50,
                   kEnd64Sig = 0x06064b50, kEnd64LocatorSig = 0x07064b50;

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

ZipArchive::ZipArchive(const uint8_t* data, uint64_t size, std::string what)
    : data_(data), size_(size), what_(std::move(what)) {
  auto bad = [&](const std::string& why) -> void {
    MT_USER_ERROR("{}: not a torch.save zip archive: {}", what_, why);
  };
  // The end-of-central-directory record: the last 22 bytes, unless a comment follows it (torch
  // writes none; up to 64 KiB is allowed by the format).
  if (size_ < 22) bad(fmt::format("{} bytes, too short for a zip end record (truncated?)", size_));
  uint64_t end = UINT64_MAX;
  const uint64_t lowest = size_ >= 22 + 65535 ? size_ - 22 - 65535 : 0;
  for (uint64_t p = size_ - 22 + 1; p-- > lowest;)
    if (le(data_ + p, 4) == kEndSig && p + 22 + le(data_ + p + 20, 2) == size_) {
      end = p;
      break;
    }
  if (end == UINT64_MAX) bad("no zip end-of-central-directory record at its end (truncated?)");
  const uint8_t* e = data_ + end;
  if (le(e + 4, 2) != 0 || le(e + 6, 2) != 0) bad("a multi-disk archive");
  uint64_t count = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // ZIP64
    if (end < 20 || le(data_ + end - 20, 4) != kEnd64LocatorSig) bad("a ZIP64 archive without its locator");
    const uint64_t z = le(data_ + end - 20 + 8, 8);
    if (z > end || end - z < 56 || le(data_ + z, 4) != kEnd64Sig) bad("a bad ZIP64 end record");
    count = le(data_ + z + 32, 8);
    cd_size = le(data_ + z + 40, 8);
    cd_offset = le(data_ + z + 48, 8);
  }
  if (cd_offset > end || cd_size > end - cd_offset) bad("the central directory lies past its end (truncated?)");
  if (count > cd_size / 46) bad(fmt::format("{} entries do not fit a central directory of {} bytes", count, cd_size));
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - p < 46 || le(data_ + p, 4) != kCentralSig) bad(fmt::format("central directory entry {} is malformed", i));
    const uint8_t* c = data_ + p;
    const uint64_t flags = le(c + 8, 2), method = le(c + 10, 2);
    uint64_t csize = le(c + 20, 4), usize = le(c + 24, 4), local = le(c + 42, 4);
    const uint64_t name_len = le(c + 28, 2), extra_len = le(c + 30, 2), comment_len = le(c + 32, 2);
    if (cd_end - p - 46 < name_len + extra_len + comment_len) bad(fmt::format("central directory entry {} is cut off", i));
    const std::string name(reinterpret_cast<const char*>(c + 46), name_len);
    if (flags & 0x1) bad(fmt::format("entry {} is encrypted", name));
    if (method != 0) bad(fmt::format("entry {} is compressed (method {}; torch.save stores entries)", name, method));
    // ZIP64 extra field: the 8-byte values of the fields that are 0xFFFFFFFF, in order.
    const uint8_t* x = c + 46 + name_len;
    for (uint64_t q = 0; q + 4 <= extra_len;) {
      const uint64_t id = le(x + q, 2), len = le(x + q + 2, 2);
      if (q + 4 + len > extra_len) bad(fmt::format("entry {} has a malformed extra field", name));
      if (id == 0x0001) {
        uint64_t r = q + 4;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFF) return;
          if (r + 8 > q + 4 + len) bad(fmt::format("entry {} has a short ZIP64 field", name));
          v = le(x + r, 8);
          r += 8;
        };
        take(usize);
        take(csize);
        take(local);
      }
      q += 4 + len;
    }
    if (csize != usize) bad(fmt::format("entry {} has {} stored bytes for {}", name, csize, usize));
    if (local > cd_offset || cd_offset - local < 30 || le(data_ + local, 4) != kLocalSig)
      bad(fmt::format("entry {}'s local header is missing (truncated?)", name));
    const uint64_t data_at = local + 30 + le(data_ + local + 26, 2) + le(data_ + local + 28, 2);
    if (data_at > cd_offset || csize > cd_offset - data_at)
      bad(fmt::format("entry {}'s {} bytes run past the data (truncated?)", name, csize));
    if (!entries_.emplace(name, Entry{data_at, csize}).second) bad(fmt::format("entry {} appears twice", name));
    p += 46 + name_len + extra_len + comment_len;
  }
}

std::string_view ZipArchive::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) MT_USER_ERROR("{}: the archive has no entry {}", what_, name);
  return {reinterpret_cast<const char*>(data_ + it->second.offset), size_t(it->second.size)};
}

}  // namespace mt
