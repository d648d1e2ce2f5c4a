#pragma once
// GPT training samples of seq_length + 1 tokens (inputs are tokens [0, L), labels tokens
// [1, L + 1)):
//  - GPTDataset: Megatron-Core's GPTDataset over an indexed dataset, with its document, sample
//    and shuffle indices (the same indices Megatron builds for the same inputs and seed),
//    cached as .npy files and reused;
//  - MockGPTDataset: synthetic counting documents cut into windows (--mock-data).
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/indexed_dataset.h"
#include "data/npy.h"

namespace mt {

// What the training loop reads: sample i is seq_length() + 1 tokens. num_samples() counts one
// epoch; get() accepts any i >= 0, and i beyond the first epoch continues into the next ones.
// get() is const and thread-safe.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual int64_t num_samples() const = 0;
  virtual int64_t seq_length() const = 0;
  virtual void get(int64_t i, int32_t* tokens /* seq_length() + 1 */) const = 0;
  // --eod-mask-loss: the token after which the loss is not taken (positions whose input is
  // this token get loss mask 0, as Megatron's get_ltor_masks_and_position_ids does); -1: none.
  virtual int32_t loss_mask_token() const { return -1; }
};

// Documents [begin, end) of an indexed dataset.
struct DocumentRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
  bool operator==(const DocumentRange&) const = default;
};

enum class Split { Train = 0, Valid = 1, Test = 2 };
const char* split_name(Split s);  // "train", "valid", "test"

// Megatron's --split: up to three non-negative weights separated by ',' or '/' ("969,30,1",
// "98,2,0", "1"), padded with zeros, normalised to sum 1; split k gets documents
// [round(c_k * n), round(c_{k+1} * n)) where c are the cumulative weights (round half to even,
// as Python's round). A malformed string is a UserError naming --split.
std::array<DocumentRange, 3> split_documents(int64_t num_documents, std::string_view split);

// Position of sample j (0 <= j < n) in epoch `epoch`'s shuffled order: a bijection of [0, n)
// for each (seed, stream, epoch), computed without tables (a Philox-keyed Feistel network,
// cycle-walked down to [0, n)).
int64_t shuffled_index(int64_t j, int64_t n, uint64_t seed, uint64_t stream, int64_t epoch);

// Windows of L + 1 tokens at stream offsets w * L over a stream of tokens, visited in
// shuffled_index order. Subclasses say what the stream is.
class TokenWindowSource : public SampleSource {
 public:
  int64_t num_samples() const override { return num_windows_; }
  int64_t seq_length() const override { return seq_length_; }
  void get(int64_t i, int32_t* tokens) const override;
  // The window sample i reads: tokens [w * L, w * L + L + 1) of the stream.
  int64_t window_of(int64_t i) const;
  int64_t stream_tokens() const { return stream_tokens_; }
  // Tokens [offset, offset + n) of the stream, unshuffled.
  virtual void read_stream(int64_t offset, int64_t n, int32_t* out) const = 0;

 protected:
  // `name` names the source in errors and keys its shuffle (stream "data/shuffle/<name>").
  void init_windows(int64_t stream_tokens, int64_t seq_length, uint64_t seed, const std::string& name);

 private:
  int64_t stream_tokens_ = 0, seq_length_ = 0, num_windows_ = 0;
  uint64_t seed_ = 0, shuffle_stream_ = 0;
};

struct GPTDatasetConfig {
  int64_t seq_length = 0;
  uint64_t seed = 0;                      // numpy RandomState seed of the shuffles (< 2^32)
  bool add_extra_token = true;            // samples of seq_length + 1 tokens
  bool drop_last_partial_sequence = true;
  int32_t eod = -1;                       // the tokenizer's end of document
  bool eod_mask_loss = false;             // --eod-mask-loss (needs eod >= 0)
  std::string cache_dir;                  // where the indices are cached; empty: not cached
  std::string split;                      // the --split string (part of the cache key)
};

// Megatron-Core's GPTDataset. `sequences` are the sequences of `dataset` in this split (as
// Megatron splits by sequence; one per document in preprocessed text); `num_samples` is how
// many samples training asks for, and the indices cover enough epochs for them:
//  - document index: the split's sequences once per epoch, shuffled (a final epoch that is
//    needed only in part, under 80% of it, is shuffled separately so it mixes less);
//  - sample index: where each sample starts (sequence, offset); samples are consecutive
//    stretches of seq_length tokens of the shuffled stream plus one more token, so sample k's
//    last token is sample k+1's first, and each token is used once per epoch;
//  - shuffle index: the order samples are visited.
// With a cache_dir the three arrays are written there as
// <hash>-GPTDataset-<split>-{document,sample,shuffle}_index.npy with a -description.txt
// holding the inputs they were built from (the hash is of it); a later run with the same
// inputs maps them instead of building. get(i) wraps i modulo num_samples().
class GPTDataset : public SampleSource {
 public:
  // UserError naming the split when it has no tokens.
  GPTDataset(std::shared_ptr<const IndexedDataset> dataset, DocumentRange sequences, int64_t num_samples,
             const GPTDatasetConfig& config, Split split);
  int64_t num_samples() const override { return int64_t(shuffle_index_.size()); }
  int64_t seq_length() const override { return cfg_.seq_length; }
  void get(int64_t i, int32_t* tokens) const override;
  int32_t loss_mask_token() const override { return cfg_.eod_mask_loss ? cfg_.eod : -1; }

  std::span<const int32_t> document_index() const { return document_index_; }
  std::span<const int64_t> sample_index() const { return sample_index_; }  // [2 * (n + 1)]
  std::span<const int64_t> shuffle_index() const { return shuffle_index_; }
  int64_t num_epochs() const { return num_epochs_; }
  int64_t requested_samples() const { return requested_; }
  bool loaded_from_cache() const { return from_cache_; }
  // The cache files' common prefix (empty without a cache_dir).
  const std::string& cache_prefix() const { return cache_prefix_; }

 private:
  std::string description() const;
  bool load_cache();
  void build();

  std::shared_ptr<const IndexedDataset> ds_;
  DocumentRange seqs_;
  int64_t requested_;
  GPTDatasetConfig cfg_;
  Split split_;
  int64_t tokens_per_epoch_ = 0, num_epochs_ = 0;
  bool from_cache_ = false;
  std::string cache_prefix_;
  std::vector<int32_t> doc_owned_;
  std::vector<int64_t> sample_owned_, shuffle_owned_;
  std::optional<NpyArray<int32_t>> doc_file_;
  std::optional<NpyArray<int64_t>> sample_file_, shuffle_file_;
  std::span<const int32_t> document_index_;
  std::span<const int64_t> sample_index_, shuffle_index_;
};

// Synthetic data a model can learn, after Megatron's --mock-data (MockGPTLowLevelDataset):
// 100000 documents whose lengths are drawn uniformly from [1, 4095] (fixed, independent of
// `seed`); a document of length n is the counting sequence 1, 2, ..., n - 1 (wrapping within
// [1, vocab_size - 2]) followed by eod = vocab_size - 1. The documents form one stream cut into
// shuffled windows that start at multiples of seq_length; `seed` and `name` key the shuffle.
class MockGPTDataset : public TokenWindowSource {
 public:
  static constexpr int64_t kNumDocuments = 100000;
  static constexpr int64_t kMaxDocumentLength = 4095;

  MockGPTDataset(int64_t vocab_size, int64_t seq_length, uint64_t seed, const std::string& name = "mock");
  void read_stream(int64_t offset, int64_t n, int32_t* out) const override;
  int32_t eod() const { return int32_t(vocab_size_ - 1); }

 private:
  int64_t vocab_size_;
  std::vector<int64_t> doc_start_;  // stream offset of each document, plus the total
};

}  // namespace mt
