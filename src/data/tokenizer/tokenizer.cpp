// build_tokenizer, and the tokenizers that need no BPE: SentencePiece (through libsentencepiece)
// and Megatron's NullTokenizer.
#include "data/tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <charconv>

#include "core/error.h"
#include "data/tokenizer/hf_tokenizer.h"
#include "data/tokenizer/utf8.h"

namespace mt {
namespace {

// Megatron's three SentencePiece tokenizers:
//  - SentencePieceTokenizer: the model's pieces plus special tokens <CLS> <SEP> <EOD> <MASK>
//    and pad/bos/eos (the model's own pieces where it has them, else <PAD> <BOS> <EOS>) appended
//    after the model's pieces; special tokens in the text are matched (leftmost first); eod = <EOD>.
//  - GPTSentencePieceTokenizer: the model as it is; eod = eos.
//  - Llama2Tokenizer: as GPTSentencePieceTokenizer, with bos put before every text.
class SentencePieceTokenizer : public Tokenizer {
 public:
  enum class Kind { Megatron, GPT, Llama2 };
  SentencePieceTokenizer(const std::string& path, Kind kind) : kind_(kind) {
    auto st = sp_.Load(path);
    if (!st.ok()) MT_USER_ERROR("--tokenizer-model {}: cannot load the SentencePiece model: {}", path, st.ToString());
    vocab_size_ = sp_.GetPieceSize();
    if (kind == Kind::Megatron) {
      auto add = [&](const std::string& t) {
        int32_t id = sp_.PieceToId(t);
        if (id == sp_.unk_id() && t != sp_.IdToPiece(sp_.unk_id())) {
          // Already added by us?
          for (const auto& [s, i] : special_)
            if (s == t) return i;
          id = int32_t(vocab_size_++);
          extra_.push_back(t);
        }
        for (const auto& [s, i] : special_)
          if (s == t) return i;
        special_.emplace_back(t, id);
        return id;
      };
      add("<CLS>");
      add("<SEP>");
      eod_ = add("<EOD>");
      add("<MASK>");
      pad_ = add(sp_.pad_id() >= 0 ? sp_.IdToPiece(sp_.pad_id()) : "<PAD>");
      bos_ = add(sp_.bos_id() >= 0 ? sp_.IdToPiece(sp_.bos_id()) : "<BOS>");
      add(sp_.eos_id() >= 0 ? sp_.IdToPiece(sp_.eos_id()) : "<EOS>");
    } else {
      eod_ = sp_.eos_id();
      bos_ = sp_.bos_id();
      pad_ = sp_.pad_id();
    }
  }
  std::string name() const override {
    return kind_ == Kind::Megatron ? "SentencePieceTokenizer" : kind_ == Kind::GPT ? "GPTSentencePieceTokenizer" : "Llama2Tokenizer";
  }
  int64_t vocab_size() const override { return vocab_size_; }

  void encode(std::string_view raw, std::vector<int32_t>& out) const override {
    std::string clean;
    std::string_view text = raw;
    if (!is_valid_utf8(raw)) text = clean = sanitize_utf8(raw);
    if (kind_ == Kind::Llama2 && bos_ >= 0) out.push_back(bos_);
    if (kind_ != Kind::Megatron) {
      encode_plain(text, out);
      return;
    }
    size_t pos = 0;
    while (true) {
      size_t best = std::string_view::npos;
      const std::pair<std::string, int32_t>* hit = nullptr;
      for (const auto& s : special_) {
        size_t at = text.find(s.first, pos);
        if (at < best) best = at, hit = &s;
      }
      if (!hit) break;
      encode_plain(text.substr(pos, best - pos), out);
      out.push_back(hit->second);
      pos = best + hit->first.size();
    }
    encode_plain(text.substr(pos), out);
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string s;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string piece;
      auto st = sp_.Decode(run, &piece);
      if (!st.ok()) MT_USER_ERROR("{}: cannot decode: {}", name(), st.ToString());
      s += piece;
      run.clear();
    };
    for (int32_t t : ids) {
      if (t < 0 || t >= vocab_size_) MT_USER_ERROR("{}: token id {} outside the vocabulary [0, {})", name(), t, vocab_size_);
      const std::string* special = nullptr;
      for (const auto& [str, id] : special_)
        if (id == t) special = &str;
      if (special) {
        flush();
        s += *special;
      } else {
        run.push_back(t);
      }
    }
    flush();
    return s;
  }

 private:
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::vector<int> ids;
    auto st = sp_.Encode(text, &ids);
    if (!st.ok()) MT_USER_ERROR("{}: cannot encode: {}", name(), st.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }
  Kind kind_;
  sentencepiece::SentencePieceProcessor sp_;
  int64_t vocab_size_ = 0;
  std::vector<std::pair<std::string, int32_t>> special_;  // in Megatron's order
  std::vector<std::string> extra_;
};

// Megatron's _NullTokenizer: the text is token ids in decimal separated by spaces; the
// vocabulary is --vocab-size ids plus eod = --vocab-size.
class NullTokenizer : public Tokenizer {
 public:
  explicit NullTokenizer(int64_t vocab_size) : n_(vocab_size) {
    if (vocab_size <= 0) MT_USER_ERROR("--tokenizer-type NullTokenizer needs --vocab-size > 0, got {}", vocab_size);
    eod_ = int32_t(vocab_size);
  }
  std::string name() const override { return "NullTokenizer"; }
  int64_t vocab_size() const override { return n_ + 1; }
  void encode(std::string_view text, std::vector<int32_t>& out) const override {
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) ++i;
      size_t j = i;
      while (j < text.size() && !(text[j] == ' ' || text[j] == '\n' || text[j] == '\t' || text[j] == '\r')) ++j;
      if (j == i) break;
      int64_t v = -1;
      auto [end, ec] = std::from_chars(text.data() + i, text.data() + j, v);
      if (ec != std::errc() || end != text.data() + j || v < 0 || v > n_)
        MT_USER_ERROR("NullTokenizer: \"{}\" is not a token id in [0, {}]", text.substr(i, std::min<size_t>(j - i, 40)), n_);
      out.push_back(int32_t(v));
      i = j;
    }
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string s;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (k) s += ' ';
      s += std::to_string(ids[k]);
    }
    return s;
  }

 private:
  int64_t n_;
};

void need(const std::string& value, const char* flag, const std::string& type) {
  if (value.empty()) MT_USER_ERROR("--tokenizer-type {} needs {}", type, flag);
}

}  // namespace

const char* tokenizer_types() {
  return "GPT2BPETokenizer, HuggingFaceTokenizer, SentencePieceTokenizer, GPTSentencePieceTokenizer, "
         "Llama2Tokenizer, NullTokenizer";
}

std::unique_ptr<Tokenizer> build_tokenizer(const TokenizerOptions& o) {
  const std::string& t = o.type;
  if (t == "GPT2BPETokenizer") {
    need(o.vocab_file, "--vocab-file (vocab.json)", t);
    need(o.merge_file, "--merge-file (merges.txt)", t);
    return load_gpt2_tokenizer(o.vocab_file, o.merge_file);
  }
  if (t == "HuggingFaceTokenizer") {
    need(o.model, "--tokenizer-model (a tokenizer.json or a folder holding one)", t);
    return load_hf_tokenizer(o.model);
  }
  if (t == "SentencePieceTokenizer" || t == "GPTSentencePieceTokenizer" || t == "Llama2Tokenizer") {
    need(o.model, "--tokenizer-model (a SentencePiece .model file)", t);
    auto kind = t == "SentencePieceTokenizer"      ? SentencePieceTokenizer::Kind::Megatron
                : t == "GPTSentencePieceTokenizer" ? SentencePieceTokenizer::Kind::GPT
                                                   : SentencePieceTokenizer::Kind::Llama2;
    return std::make_unique<SentencePieceTokenizer>(o.model, kind);
  }
  if (t == "NullTokenizer") return std::make_unique<NullTokenizer>(o.vocab_size);
  if (t.empty()) MT_USER_ERROR("--tokenizer-type is required (one of {})", tokenizer_types());
  MT_USER_ERROR("--tokenizer-type {}: unknown (expected one of {})", t, tokenizer_types());
}

}  // namespace mt
