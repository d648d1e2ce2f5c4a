#pragma once
// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the data; offsets count from the end of the header.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "core/file_io.h"

namespace mt {

struct SafetensorsEntry {
  std::string dtype;  // as in the file: "F32", "BF16", "F64", ...
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

// Maps a .safetensors file and validates its header: a truncated file, a bad header length,
// malformed JSON, an unknown field type or a tensor whose bytes do not fit the data section
// is a UserError naming the file (and the tensor).
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return file_.path(); }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;  // UserError if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Tensor `name` as a read-only CPU view of the mapping (F32, BF16, F16, I64, I32, U16; other
  // dtypes are a UserError). The reader must outlive the view, and writing through it faults;
  // copy it (Tensor::to, copy_from) to modify. A tensor not aligned to its element size in the
  // file (never the case for files the reference library writes) is returned as a copy.
  Tensor get(const std::string& name) const;

 private:
  MappedFile file_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes CPU or CUDA tensors (contiguous) to `path` atomically (temporary file, fsync, rename).
// Data is laid out by decreasing element size, so every tensor is aligned in the file.
// Duplicate or reserved ("__metadata__") names are a UserError.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// "F32" <-> DType::F32, ... ; false for dtypes megatron.cpp does not hold.
bool safetensors_dtype(const std::string& name, DType& out);
const char* safetensors_dtype_name(DType t);

}  // namespace mt
