#pragma once
// Megatron's indexed dataset (megatron/core/datasets/indexed_dataset.py), read in place by mmap.
// PREFIX.bin holds the tokens; PREFIX.idx, little-endian:
//   char[9]  magic "MMIDIDX\0\0"
//   uint64   version (1)
//   uint8    dtype code of the tokens (IndexDType)
//   uint64   S, the number of sequences
//   uint64   D, the number of entries of document_indices (documents + 1)
//   int32    sequence_lengths[S]    tokens per sequence
//   int64    sequence_pointers[S]   byte offset of each sequence in .bin
//   int64    document_indices[D]    document d = sequences [document_indices[d], document_indices[d+1])
//   (int8    sequence_modes[S]      only in multimodal datasets; accepted and ignored)
// preprocess_data.py writes one sequence per document unless it splits sentences.
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/file_io.h"

namespace mt {

// Megatron's DType codes for the .bin tokens.
enum class IndexDType : uint8_t { U8 = 1, I8 = 2, I16 = 3, I32 = 4, I64 = 5, F64 = 6, F32 = 7, U16 = 8 };
size_t index_dtype_size(IndexDType t);
const char* index_dtype_name(IndexDType t);
// The token type preprocess_data.py picks: uint16 when vocab_size < 65500, else int32.
IndexDType index_dtype_for_vocab(int64_t vocab_size);

class IndexedDataset {
 public:
  // Maps PREFIX.idx and PREFIX.bin and validates them; a missing, truncated or inconsistent
  // file is a UserError naming the file and what is wrong.
  explicit IndexedDataset(const std::string& prefix);
  static std::unique_ptr<IndexedDataset> open(const std::string& prefix) {
    return std::make_unique<IndexedDataset>(prefix);
  }
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  IndexDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_doc_entries_ - 1; }
  int64_t num_tokens() const { return num_tokens_; }  // sum of all sequence lengths

  int64_t sequence_length(int64_t i) const;
  int64_t sequence_pointer(int64_t i) const;  // byte offset in .bin
  // Document d is sequences [first, second).
  std::pair<int64_t, int64_t> document_range(int64_t d) const;
  int64_t document_index(int64_t k) const;  // entry k of document_indices, 0 <= k <= num_documents()

  // Tokens [offset, offset + n) of sequence i, converted to int32.
  void read(int64_t i, int64_t offset, int64_t n, int32_t* out) const;
  std::vector<int32_t> read(int64_t i) const;  // the whole sequence
  // The smallest and largest token id of the sequences (one scan on first call, then kept;
  // {0, -1} if there are no tokens). data/token_range.h caches them on disk across runs.
  struct TokenIdRange {
    int64_t min = 0, max = -1;
  };
  TokenIdRange token_id_range() const;
  int64_t max_token_id() const { return token_id_range().max; }
  // Seeds the range from a cache (data/token_range.h) instead of scanning.
  void set_token_id_range(TokenIdRange r) const;
  // The whole .bin, as mapped.
  std::span<const uint8_t> bin_bytes() const { return {bin_.data(), bin_.size()}; }

 private:
  std::string prefix_, idx_path_, bin_path_;
  MappedFile idx_, bin_;
  IndexDType dtype_ = IndexDType::U16;
  int64_t num_sequences_ = 0, num_doc_entries_ = 0, num_tokens_ = 0;
  const uint8_t* lengths_ = nullptr;   // int32[S], possibly unaligned
  const uint8_t* pointers_ = nullptr;  // int64[S]
  const uint8_t* doc_idx_ = nullptr;   // int64[D]
  mutable std::mutex range_mu_;
  mutable bool range_known_ = false;
  mutable TokenIdRange range_;
};

// Writes PREFIX.bin/.idx in the layout above (Megatron's IndexedDatasetBuilder), through
// temporary files that finalize() renames into place (.bin first, then .idx). Without
// finalize() nothing appears under the final names.
class IndexedDatasetWriter {
 public:
  // Tokens must lie in [0, vocab_size); the token dtype is index_dtype_for_vocab(vocab_size).
  IndexedDatasetWriter(const std::string& prefix, int64_t vocab_size);
  // Tokens of any value the dtype holds (for merging datasets).
  IndexedDatasetWriter(const std::string& prefix, IndexDType dtype);
  // One document of one sequence.
  void add_document(std::span<const int32_t> tokens);
  // One document of several sequences (their lengths sum to tokens.size(); none: an empty
  // document, as preprocess_data.py writes for an empty text).
  void add_document(std::span<const int32_t> tokens, std::span<const int32_t> sequence_lengths);
  // Appends every document of `other`, which must have this writer's dtype (a UserError
  // naming both otherwise); its .bin is copied as it is.
  void add_index(const IndexedDataset& other);
  void finalize();
  int64_t num_documents() const { return int64_t(doc_idx_.size()) - 1; }
  int64_t num_sequences() const { return int64_t(lengths_.size()); }
  IndexDType dtype() const { return dtype_; }

 private:
  std::string prefix_;
  int64_t vocab_size_;
  IndexDType dtype_;
  AtomicFileWriter bin_, idx_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_;
  std::vector<int64_t> doc_idx_{0};
  std::vector<uint8_t> buf_;
  int64_t bin_bytes_ = 0;
  bool finalized_ = false;
};

}  // namespace mt
