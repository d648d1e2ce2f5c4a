#pragma once
// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the data; offsets count from the end of the header.
// The tensors' byte ranges tile the data section exactly: no gaps, no overlaps, nothing after.
#include <cstdint>
#include <map>
#include <memory>
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

// Maps a .safetensors file and validates its header to the format's rules. Each of these is a
// UserError naming the file (and the tensor, where one is to blame): a file too short for the
// header length, a header length past the end of the file, a header that is not a JSON object, a
// key given twice, an entry without dtype/shape/data_offsets, a dtype the format does not define,
// a shape whose size in bytes differs from its byte range, byte ranges past the end of the file
// (truncated data), overlapping, with a gap between them, or not reaching the end of the file.
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
  // megatron.cpp's DType of `name`; UserError for a dtype we do not hold (F64, I8, ...).
  DType dtype(const std::string& name) const;

  // Tensor `name` as a read-only CPU view of the mapping (F32, BF16, F16, I64, I32, U16; other
  // dtypes are a UserError). The reader must outlive the view, and writing through it faults;
  // copy it (Tensor::to, copy_from) to modify. A tensor not aligned to its element size in the
  // file (never the case for files the reference library writes) is returned as a copy.
  Tensor get(const std::string& name) const;
  // Drops the pages of `name` from this process's memory (they stay in the page cache), so a
  // reader that goes through a large file tensor by tensor keeps its resident memory near one
  // tensor. Views of `name` stay valid (the pages are read again on access).
  void release(const std::string& name) const;
  // Starts reading `name`'s pages in the background (a reader going tensor by tensor asks for the
  // next one while it works on this one).
  void prefetch(const std::string& name) const;

 private:
  MappedFile file_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One tensor of a file being written: its name, dtype and shape (the data comes later).
struct SafetensorsSpec {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};

// Writes a safetensors file one tensor at a time, so that a file larger than memory can be
// written from data made on the fly: the header is computed from the specs and written first,
// then each tensor's bytes are appended in the order data_order() gives (by decreasing element
// size, so that every tensor is aligned in the file; ties keep the specs' order). The file is
// written to a temporary name beside `path` and renamed into place by finish() (fsync'd);
// destroyed without finish(), the temporary is deleted. __metadata__ always holds
// "format": "pt" (as the reference library writes) unless `metadata` sets "format".
// Duplicate or reserved ("__metadata__") names are a UserError. With `background`, write() hands
// the tensor to a writer thread and returns once the previous one is on its way to disk, so the
// caller reads and converts the next tensor while this one is written (two tensors alive at most);
// a write error comes back from a later write() or finish().
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string path, std::vector<SafetensorsSpec> specs,
                    const std::map<std::string, std::string>& metadata = {}, bool background = false);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  const std::vector<size_t>& data_order() const { return order_; }  // indices into the specs
  // The next tensor's bytes (spec data_order()[k] for the k-th call); `t` must have its dtype and
  // shape. CPU or CUDA, contiguous.
  void write(const Tensor& t);
  // Rewrites __metadata__ with values of the same lengths as the ones given at construction
  // (placeholders: checksums known only once the data is written). UserError otherwise.
  void rewrite_metadata(const std::map<std::string, std::string>& metadata);
  // Every tensor must have been written. Flushes, fsyncs and renames the file into place.
  void finish();
  uint64_t file_bytes() const { return file_bytes_; }

 private:
  std::string header_text(const std::map<std::string, std::string>& metadata) const;
  void wait_idle();  // the background writer has written everything handed to it (rethrows its error)
  struct Background;
  std::unique_ptr<Background> bg_;
  std::string path_, tmp_path_;
  std::vector<SafetensorsSpec> specs_;
  std::vector<size_t> order_;
  std::vector<uint64_t> offsets_;  // begin of each spec in the data section
  size_t header_bytes_ = 0;        // the JSON text, padded
  size_t next_ = 0;
  uint64_t file_bytes_ = 0;
  int fd_ = -1;
  bool finished_ = false;
};

// Writes CPU or CUDA tensors (contiguous) to `path` atomically with SafetensorsWriter.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// "F32" <-> DType::F32, ... ; false for dtypes megatron.cpp does not hold.
bool safetensors_dtype(const std::string& name, DType& out);
const char* safetensors_dtype_name(DType t);

}  // namespace mt
