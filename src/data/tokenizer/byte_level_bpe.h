#pragma once
// Byte-level BPE (GPT-2, Llama 3, and every Hugging Face tokenizer.json with a ByteLevel
// pre-tokenizer): added tokens are cut out first, the rest is split by the pre-tokenizer
// regexes into words, each word's bytes are merged by rank, and the result is cached per word.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/tokenizer/regex.h"
#include "data/tokenizer/tokenizer.h"

namespace mt {

// GPT-2's pre-tokenizer pattern (OpenAI's encoder.py; HF ByteLevel with use_regex = true).
extern const char* const kGPT2SplitPattern;

// The model in the byte-level alphabet of byte_to_unicode() (as vocab.json, merges.txt and
// tokenizer.json spell it); added tokens in plain text.
struct ByteLevelBPEConfig {
  std::string source;  // the file(s), for errors
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  struct Split {
    std::string pattern;
    bool literal = false;
  };
  std::vector<Split> splits;  // applied in turn (each splits the pieces of the previous)
  bool add_prefix_space = false;
  bool ignore_merges = false;  // a word that is a vocabulary token is taken whole
  struct Added {
    std::string content;
    int32_t id = 0;
  };
  std::vector<Added> added;  // matched in the text before pre-tokenization (leftmost, longest)
};

class ByteLevelBPETokenizer : public Tokenizer {
 public:
  // UserError naming config.source for a merge of unknown tokens or a merged token missing
  // from the vocabulary, duplicate ids, or a bad pattern.
  ByteLevelBPETokenizer(std::string name, const ByteLevelBPEConfig& config);
  ~ByteLevelBPETokenizer() override;
  std::string name() const override { return name_; }
  int64_t vocab_size() const override { return vocab_size_; }
  using Tokenizer::encode;
  void encode(std::string_view text, std::vector<int32_t>& out) const override;
  std::string decode(std::span<const int32_t> ids) const override;

  // The id of a token given by its text (plain bytes for vocabulary tokens), or -1.
  int32_t token_id(std::string_view text) const;
  void set_special_ids(int32_t eod, int32_t bos, int32_t pad) {
    eod_ = eod;
    bos_ = bos;
    pad_ = pad;
  }

 private:
  void encode_segment(std::string_view seg, std::vector<int32_t>& out) const;
  void split_and_encode(std::string_view piece, size_t level, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using WordMap = std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;
  struct CacheShard {
    std::mutex mu;
    WordMap map;
  };

  std::string name_;
  int64_t vocab_size_ = 0;
  std::vector<std::string> id_bytes_;  // id -> plain bytes (added tokens: their content)
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> bytes_id_;
  int32_t byte_id_[256];
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::vector<std::unique_ptr<Regex>> splits_;
  bool add_prefix_space_ = false, ignore_merges_ = false;
  std::vector<std::vector<std::pair<std::string, int32_t>>> added_by_first_byte_;  // longest first
  bool has_added_ = false;
  static constexpr size_t kShards = 16, kShardCapacity = 1 << 15, kMaxCachedWord = 256;
  mutable CacheShard cache_[kShards];
};

}  // namespace mt
