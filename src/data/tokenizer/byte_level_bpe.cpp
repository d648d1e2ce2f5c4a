#include "data/tokenizer/byte_level_bpe.h"

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "data/tokenizer/utf8.h"

namespace mt {

const char* const kGPT2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// A byte-level token string to its plain bytes; a code point outside the alphabet (a special
// token such as "<|endoftext|>" is inside it, but "<s>"-like tokens of other models may not be)
// is kept as its UTF-8.
std::string byte_level_to_bytes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    uint32_t cp = next_code_point(s, i);
    int b = unicode_to_byte(cp);
    if (b >= 0) out.push_back(char(b));
    else out.append(s.substr(start, i - start));
  }
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

}  // namespace

ByteLevelBPETokenizer::ByteLevelBPETokenizer(std::string name, const ByteLevelBPEConfig& c) : name_(std::move(name)) {
  // Byte-level strings -> ids, for resolving merges in the alphabet they are written in.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> level_id;
  level_id.reserve(c.vocab.size() * 2);
  int64_t max_id = -1;
  for (const auto& [tok, id] : c.vocab) {
    if (id < 0) MT_USER_ERROR("{}: token \"{}\" has negative id {}", c.source, tok, id);
    if (!level_id.emplace(tok, id).second) MT_USER_ERROR("{}: token \"{}\" appears twice", c.source, tok);
    max_id = std::max<int64_t>(max_id, id);
  }
  for (const auto& a : c.added) {
    if (a.id < 0) MT_USER_ERROR("{}: added token \"{}\" has negative id {}", c.source, a.content, a.id);
    if (a.content.empty()) MT_USER_ERROR("{}: added token {} is empty", c.source, a.id);
    max_id = std::max<int64_t>(max_id, a.id);
  }
  if (max_id < 0) MT_USER_ERROR("{}: empty vocabulary", c.source);
  if (max_id >= (int64_t(1) << 31) - 1) MT_USER_ERROR("{}: token id {} is too large", c.source, max_id);
  // Ids index a table of vocab_size entries: a sparse id far past the number of tokens (a malformed
  // file; the fuzzer's) would allocate gigabytes for nothing.
  const int64_t tokens = int64_t(c.vocab.size() + c.added.size());
  if (max_id >= 2 * tokens + 65536)
    MT_USER_ERROR("{}: token id {} is far beyond the {} tokens the file defines (ids are expected dense from 0)",
                  c.source, max_id, tokens);
  vocab_size_ = max_id + 1;
  id_bytes_.assign(size_t(vocab_size_), std::string());
  std::vector<uint8_t> seen(size_t(vocab_size_), 0);
  for (const auto& [tok, id] : c.vocab) {
    if (seen[size_t(id)]) MT_USER_ERROR("{}: id {} is given to two tokens", c.source, id);
    seen[size_t(id)] = 1;
    id_bytes_[size_t(id)] = byte_level_to_bytes(tok);
    bytes_id_.emplace(id_bytes_[size_t(id)], id);
  }
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(byte_to_unicode()[size_t(b)], s);
    auto it = level_id.find(s);
    if (it != level_id.end()) byte_id_[b] = it->second;
  }
  merges_.reserve(c.merges.size() * 2);
  for (size_t r = 0; r < c.merges.size(); ++r) {
    const auto& [a, b] = c.merges[r];
    auto ia = level_id.find(a), ib = level_id.find(b);
    if (ia == level_id.end() || ib == level_id.end())
      MT_USER_ERROR("{}: merge {} \"{} {}\" uses a token that is not in the vocabulary (\"{}\")", c.source, r + 1, a,
                    b, ia == level_id.end() ? a : b);
    auto im = level_id.find(a + b);
    if (im == level_id.end())
      MT_USER_ERROR("{}: merge {} \"{} {}\" makes \"{}{}\", which is not in the vocabulary", c.source, r + 1, a, b,
                    a, b);
    // A repeated merge takes its last rank, as Hugging Face and OpenAI's encoder.py do.
    merges_.insert_or_assign(pair_key(ia->second, ib->second), std::make_pair(int32_t(r), im->second));
  }
  for (const auto& s : c.splits) splits_.push_back(std::make_unique<Regex>(s.pattern, s.literal, c.source));
  add_prefix_space_ = c.add_prefix_space;
  ignore_merges_ = c.ignore_merges;
  added_by_first_byte_.resize(256);
  for (const auto& a : c.added) {
    if (!seen[size_t(a.id)]) id_bytes_[size_t(a.id)] = a.content;
    seen[size_t(a.id)] = 1;
    added_by_first_byte_[uint8_t(a.content[0])].emplace_back(a.content, a.id);
    has_added_ = true;
  }
  for (auto& v : added_by_first_byte_)
    std::stable_sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
}

ByteLevelBPETokenizer::~ByteLevelBPETokenizer() = default;

int32_t ByteLevelBPETokenizer::token_id(std::string_view text) const {
  if (has_added_ && !text.empty())
    for (const auto& [content, id] : added_by_first_byte_[uint8_t(text[0])])
      if (content == text) return id;
  auto it = bytes_id_.find(text);
  return it == bytes_id_.end() ? -1 : it->second;
}

void ByteLevelBPETokenizer::encode(std::string_view text, std::vector<int32_t>& out) const {
  std::string clean;
  if (!is_valid_utf8(text)) {
    clean = sanitize_utf8(text);
    text = clean;
  }
  if (!has_added_) {
    encode_segment(text, out);
    return;
  }
  // Leftmost, then longest, added token; the text between them goes through the model.
  size_t seg = 0;
  for (size_t i = 0; i < text.size();) {
    const auto& cands = added_by_first_byte_[uint8_t(text[i])];
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& c : cands)
      if (text.compare(i, c.first.size(), c.first) == 0) {
        hit = &c;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > seg) encode_segment(text.substr(seg, i - seg), out);
    out.push_back(hit->second);
    i += hit->first.size();
    seg = i;
  }
  if (seg < text.size()) encode_segment(text.substr(seg), out);
}

void ByteLevelBPETokenizer::encode_segment(std::string_view seg, std::vector<int32_t>& out) const {
  if (add_prefix_space_ && !seg.empty() && seg[0] != ' ') {
    std::string s = " ";
    s.append(seg);
    split_and_encode(s, 0, out);
  } else {
    split_and_encode(seg, 0, out);
  }
}

void ByteLevelBPETokenizer::split_and_encode(std::string_view piece, size_t level, std::vector<int32_t>& out) const {
  if (level == splits_.size()) {
    encode_word(piece, out);
    return;
  }
  splits_[level]->split_isolated(piece, [&](size_t b, size_t e) { split_and_encode(piece.substr(b, e - b), level + 1, out); });
}

void ByteLevelBPETokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    if (byte_id_[uint8_t(word[0])] >= 0) out.push_back(byte_id_[uint8_t(word[0])]);
    return;
  }
  if (ignore_merges_) {
    auto it = bytes_id_.find(word);
    if (it != bytes_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() > kMaxCachedWord) {
    merge_word(word, out);
    return;
  }
  CacheShard& shard = cache_[std::hash<std::string_view>{}(word) % kShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.map.find(word);
    if (it != shard.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  merge_word(word, out);
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() < kShardCapacity)
    shard.map.emplace(std::string(word), std::vector<int32_t>(out.begin() + std::ptrdiff_t(start), out.end()));
}

// The merge loop: symbols in a linked list, candidate pairs in a heap ordered by (rank,
// position); an entry whose pair has changed since it was pushed is skipped. O(n log n).
void ByteLevelBPETokenizer::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  const int n0 = int(word.size());
  std::vector<int32_t> id;
  id.reserve(size_t(n0));
  for (char ch : word)
    if (byte_id_[uint8_t(ch)] >= 0) id.push_back(byte_id_[uint8_t(ch)]);  // bytes without a token are dropped
  const int n = int(id.size());
  if (n <= 1) {
    out.insert(out.end(), id.begin(), id.end());
    return;
  }
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  std::vector<uint8_t> alive(size_t(n), 1);
  for (int i = 0; i < n; ++i) {
    prev[size_t(i)] = i - 1;
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  }
  struct Cand {
    int32_t rank;
    int pos;
    int32_t merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int p) {
    int q = next[size_t(p)];
    if (q < 0) return;
    auto it = merges_.find(pair_key(id[size_t(p)], id[size_t(q)]));
    if (it != merges_.end()) heap.push({it->second.first, p, it->second.second});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    const int p = c.pos;
    if (!alive[size_t(p)] || next[size_t(p)] < 0) continue;
    const int q = next[size_t(p)];
    auto it = merges_.find(pair_key(id[size_t(p)], id[size_t(q)]));
    if (it == merges_.end() || it->second.second != c.merged) continue;
    id[size_t(p)] = c.merged;
    alive[size_t(q)] = 0;
    next[size_t(p)] = next[size_t(q)];
    if (next[size_t(q)] >= 0) prev[size_t(next[size_t(q)])] = p;
    if (prev[size_t(p)] >= 0) push(prev[size_t(p)]);
    push(p);
  }
  for (int i = 0; i >= 0; i = next[size_t(i)]) out.push_back(id[size_t(i)]);
}

std::string ByteLevelBPETokenizer::decode(std::span<const int32_t> ids) const {
  std::string s;
  for (int32_t t : ids) {
    if (t < 0 || t >= vocab_size_) MT_USER_ERROR("{}: token id {} outside the vocabulary [0, {})", name_, t, vocab_size_);
    s.append(id_bytes_[size_t(t)]);
  }
  return s;
}

}  // namespace mt
