#include "data/npy.h"

#include <charconv>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace mt {
namespace {

std::string shape_str(int64_t n, int64_t cols) {
  return cols ? fmt::format("({}, {})", n / cols, cols) : fmt::format("({},)", n);
}

template <class T> void write_any(const std::string& path, std::span<const T> data, const char* descr, int64_t cols) {
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr,
                                 shape_str(int64_t(data.size()), cols));
  // Pad with spaces so that magic + version + length + header is a multiple of 64, ending in \n.
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string head = "\x93NUMPY";
  head.push_back(char(1));
  head.push_back(char(0));
  const uint16_t len = uint16_t(dict.size());
  head.append(reinterpret_cast<const char*>(&len), 2);
  head += dict;
  AtomicFileWriter w(path);
  w.write(head.data(), head.size());
  w.write(data.data(), data.size_bytes());
  w.commit();
}

template <class T> std::optional<NpyArray<T>> read_any(const std::string& path, const char* descr, int64_t cols) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  NpyArray<T> a;
  try {
    a.file = MappedFile(path);
  } catch (const UserError&) {
    return std::nullopt;
  }
  const uint8_t* p = a.file.data();
  const size_t size = a.file.size();
  if (size < 10 || std::memcmp(p, "\x93NUMPY\x01\x00", 8) != 0) return std::nullopt;
  uint16_t hlen;
  std::memcpy(&hlen, p + 8, 2);
  if (10 + size_t(hlen) > size) return std::nullopt;
  std::string_view h(reinterpret_cast<const char*>(p) + 10, hlen);
  if (h.find(fmt::format("'descr': '{}'", descr)) == std::string_view::npos) return std::nullopt;
  if (h.find("'fortran_order': False") == std::string_view::npos) return std::nullopt;
  const size_t body = size - 10 - hlen;
  if (body % sizeof(T) != 0) return std::nullopt;
  const int64_t n = int64_t(body / sizeof(T));
  if (cols && n % cols != 0) return std::nullopt;
  if (h.find(fmt::format("'shape': {}", shape_str(n, cols))) == std::string_view::npos) return std::nullopt;
  a.data = std::span<const T>(reinterpret_cast<const T*>(p + 10 + hlen), size_t(n));
  return a;
}

}  // namespace

void write_npy(const std::string& path, std::span<const int32_t> data, int64_t cols) { write_any(path, data, "<i4", cols); }
void write_npy(const std::string& path, std::span<const int64_t> data, int64_t cols) { write_any(path, data, "<i8", cols); }
std::optional<NpyArray<int32_t>> read_npy_i32(const std::string& path, int64_t cols) { return read_any<int32_t>(path, "<i4", cols); }
std::optional<NpyArray<int64_t>> read_npy_i64(const std::string& path, int64_t cols) { return read_any<int64_t>(path, "<i8", cols); }

}  // namespace mt
