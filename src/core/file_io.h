#pragma once
// Files in and out: a read-only memory map for reading datasets and checkpoints in place, and
// a writer that never leaves a half-written file under the final name (DESIGN.md: "Files are
// written atomically").
#include <cstddef>
#include <cstdint>
#include <string>

namespace mt {

// A whole file mapped read-only. An empty file maps to no memory (data() == nullptr).
class MappedFile {
 public:
  MappedFile() = default;
  // UserError naming `path` if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The whole of a regular file, for the small files we parse (JSON, trackers, descriptions).
// UserError naming `path` (after `what`, e.g. "--tokenizer-model") when it cannot be opened, is
// not a regular file (a FIFO or a device would block or never end) or is larger than `max_bytes`.
std::string read_regular_file(const std::string& path, const std::string& what = "",
                              size_t max_bytes = size_t(1) << 30);

// Writes `path` through a temporary file beside it (`path.tmp.PID`). commit() flushes, fsyncs,
// renames it into place and fsyncs the directory. Destroyed without commit(), it deletes the
// temporary file, so a crash or an error leaves the previous file (if any) untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);  // UserError if the temporary cannot be created
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* p, size_t n);  // UserError on a failed write (disk full, ...)
  uint64_t bytes_written() const { return written_; }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_path_;
  void* file_ = nullptr;  // FILE*
  uint64_t written_ = 0;
  bool committed_ = false;
};

}  // namespace mt
