#pragma once
// Index arrays as NumPy .npy files (format 1.0, little-endian, C order): the cache of built
// dataset indices, readable with numpy.load.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/file_io.h"

namespace mt {

// Writes a 1-d (cols == 0) or 2-d [rows, cols] array of int32 or int64 atomically.
void write_npy(const std::string& path, std::span<const int32_t> data, int64_t cols = 0);
void write_npy(const std::string& path, std::span<const int64_t> data, int64_t cols = 0);

// A mapped .npy whose elements are T; nullopt when the file is missing, malformed, of another
// dtype, or of another number of columns (callers rebuild it then).
template <class T> struct NpyArray {
  MappedFile file;
  std::span<const T> data;
};
std::optional<NpyArray<int32_t>> read_npy_i32(const std::string& path, int64_t cols = 0);
std::optional<NpyArray<int64_t>> read_npy_i64(const std::string& path, int64_t cols = 0);

}  // namespace mt
