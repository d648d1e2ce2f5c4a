#pragma once
// Tokenizers with Megatron-LM's names (megatron/training/tokenizer/tokenizer.py):
//   GPT2BPETokenizer       vocab.json + merges.txt (OpenAI GPT-2 files)
//   HuggingFaceTokenizer   a Hugging Face tokenizer.json (byte-level BPE)
//   SentencePieceTokenizer a SentencePiece .model (Megatron's special tokens added)
//   GPTSentencePieceTokenizer, Llama2Tokenizer  a SentencePiece .model, eod = its </s>
//   NullTokenizer          ids are written as decimal numbers; vocabulary --vocab-size, eod = vocab-1
// encode() and decode() are const and safe to call from several threads at once.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mt {

struct TokenizerOptions {
  std::string type;        // --tokenizer-type
  std::string vocab_file;  // --vocab-file
  std::string merge_file;  // --merge-file
  std::string model;       // --tokenizer-model (tokenizer.json, a folder holding it, or a .model)
  int64_t vocab_size = 0;  // --vocab-size (NullTokenizer)
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  // Ids lie in [0, vocab_size()).
  virtual int64_t vocab_size() const = 0;
  // Appends the ids of `text` to `out` (Megatron's tokenize(): no bos/eod added). Text that is
  // not valid UTF-8 is read as Python's bytes.decode("utf-8", "replace") reads it.
  virtual void encode(std::string_view text, std::vector<int32_t>& out) const = 0;
  std::vector<int32_t> encode(std::string_view text) const {
    std::vector<int32_t> v;
    encode(text, v);
    return v;
  }
  // The bytes the ids stand for (special tokens included, as their text).
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // Megatron's special ids; -1 where the tokenizer has none.
  int32_t eod() const { return eod_; }
  int32_t bos() const { return bos_; }
  int32_t pad() const { return pad_; }

 protected:
  int32_t eod_ = -1, bos_ = -1, pad_ = -1;
};

// The tokenizer `o.type` names, loaded from its files; UserError naming the flag or file on
// a missing flag, an unknown type or a malformed file.
std::unique_ptr<Tokenizer> build_tokenizer(const TokenizerOptions& o);

// The --tokenizer-type values build_tokenizer accepts, comma separated (for help and errors).
const char* tokenizer_types();

}  // namespace mt
