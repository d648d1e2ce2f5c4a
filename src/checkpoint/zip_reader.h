#pragma once
// The zip framing of torch.save files (PyTorch's "zipfile" serialization, torch >= 1.6): stored
// (uncompressed) entries, any ZIP64 extensions, read from a byte range of a mapped file (a whole
// model_optim_rng.pt, or one item of a .distcp file). Only what torch.save writes is accepted:
// entries stored without compression or encryption, one disk, names unique. Everything else is a
// UserError naming `what` (the file, and the item) and what was expected.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace mt {

class ZipArchive {
 public:
  struct Entry {
    uint64_t offset = 0;  // of the data, from the start of the archive's bytes
    uint64_t size = 0;
  };

  // `data`, `size`: the archive's bytes (kept alive by the caller). `what` names them in errors.
  ZipArchive(const uint8_t* data, uint64_t size, std::string what);

  const std::string& what() const { return what_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // The bytes of entry `name`; UserError when absent.
  std::string_view get(const std::string& name) const;

 private:
  const uint8_t* data_;
  uint64_t size_;
  std::string what_;
  std::map<std::string, Entry> entries_;
};

}  // namespace mt
