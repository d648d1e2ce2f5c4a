#pragma once
// GPT training samples: windows of seq_length + 1 tokens (inputs are tokens [0, L), labels
// tokens [1, L + 1)) drawn from a token stream in a shuffled order per epoch.
//
// This is deliberately simpler than Megatron's GPTDataset (its doc/sample/shuffle index files
// and their exact order come later): the documents of a split are one stream, cut into windows
// that start at multiples of L, so consecutive windows share one token, and every token of the
// stream except a tail of fewer than L tokens is a label exactly once per epoch.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/indexed_dataset.h"

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

// The documents `docs` of `dataset` as one stream (documents are used as they are: text
// preprocessed with an end-of-document token already ends with one). The dataset must outlive
// this object. A range with fewer than seq_length + 1 tokens is a UserError naming `name`
// (the split: "train", "valid", "test").
class GPTWindowDataset : public TokenWindowSource {
 public:
  GPTWindowDataset(const IndexedDataset& dataset, DocumentRange docs, int64_t seq_length, uint64_t seed,
                   const std::string& name);
  void read_stream(int64_t offset, int64_t n, int32_t* out) const override;
  DocumentRange documents() const { return docs_; }

 private:
  const IndexedDataset& ds_;
  DocumentRange docs_;
  int64_t first_seq_ = 0;
  std::vector<int64_t> seq_start_;  // stream offset of each sequence of the range, plus the total
};

// Synthetic data a model can learn, after Megatron's --mock-data (MockGPTLowLevelDataset):
// 100000 documents whose lengths are drawn uniformly from [1, 4095] (fixed, independent of
// `seed`); a document of length n is the counting sequence 1, 2, ..., n - 1 (wrapping within
// [1, vocab_size - 2]) followed by eod = vocab_size - 1. The documents form one stream cut into
// shuffled windows like GPTWindowDataset; `seed` and `name` key the shuffle.
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
