#include "data/gpt_dataset.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace mt {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

[[noreturn]] void bad_split(std::string_view split, std::string_view why) {
  MT_USER_ERROR("--split \"{}\": {}; expected up to three non-negative weights for train, valid and test "
                "separated by commas, like 969,30,1",
                split, why);
}

// Python's round() on a float: to nearest, ties to even (the default FP rounding mode).
int64_t round_half_even(double x) { return int64_t(std::nearbyint(x)); }

}  // namespace

const char* split_name(Split s) {
  switch (s) {
    case Split::Train: return "train";
    case Split::Valid: return "valid";
    case Split::Test: return "test";
  }
  return "?";
}

std::array<DocumentRange, 3> split_documents(int64_t num_documents, std::string_view split) {
  MT_CHECK(num_documents >= 0, "negative document count {}", num_documents);
  std::vector<double> w;
  std::string_view rest = split;
  if (trim(rest).empty()) bad_split(split, "empty");
  while (true) {
    size_t cut = rest.find_first_of(",/");
    std::string_view part = trim(rest.substr(0, cut));
    if (part.empty()) bad_split(split, "an empty weight");
    if (part.find_first_not_of("0123456789.") != std::string_view::npos)
      bad_split(split, fmt::format("\"{}\" is not a non-negative number", part));
    double v = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || end != part.data() + part.size() || !std::isfinite(v))
      bad_split(split, fmt::format("\"{}\" is not a number", part));
    w.push_back(v);
    if (cut == std::string_view::npos) break;
    rest.remove_prefix(cut + 1);
  }
  if (w.size() > 3) bad_split(split, fmt::format("{} weights", w.size()));
  w.resize(3, 0.0);
  double sum = w[0] + w[1] + w[2];
  if (!(sum > 0)) bad_split(split, "the weights sum to zero");
  // As Megatron: normalise, accumulate from 0, and round each bookend times the document count.
  std::array<DocumentRange, 3> out;
  double lo = 0;
  for (int k = 0; k < 3; ++k) {
    double hi = lo + w[k] / sum;
    out[k].begin = round_half_even(lo * double(num_documents));
    out[k].end = round_half_even(hi * double(num_documents));
    lo = hi;
  }
  return out;
}

int64_t shuffled_index(int64_t j, int64_t n, uint64_t seed, uint64_t stream, int64_t epoch) {
  MT_CHECK(n > 0 && j >= 0 && j < n, "shuffled_index({}, {})", j, n);
  MT_CHECK(epoch >= 0 && epoch < (int64_t(1) << 28), "epoch {} out of range", epoch);
  if (n == 1) return 0;
  // A balanced Feistel network on 2h bits (2^(2h) < 4n) is a bijection; walking the cycle until
  // the value falls in [0, n) restricts it to a bijection of [0, n) (expected < 4 walks).
  int half = (std::bit_width(uint64_t(n - 1)) + 1) / 2;
  const uint64_t mask = (uint64_t(1) << half) - 1;
  uint64_t x = uint64_t(j);
  do {
    uint64_t l = x >> half, r = x & mask;
    for (uint64_t round = 0; round < 6; ++round) {
      uint32_t f[4];
      philox_block(seed, stream, (uint64_t(epoch) << 36) | (round << 32) | r, f);
      uint64_t next_r = (l ^ f[0]) & mask;
      l = r;
      r = next_r;
    }
    x = (l << half) | r;
  } while (x >= uint64_t(n));
  return int64_t(x);
}

void TokenWindowSource::init_windows(int64_t stream_tokens, int64_t seq_length, uint64_t seed,
                                     const std::string& name) {
  MT_CHECK(seq_length > 0 && stream_tokens > seq_length, "{}: {} tokens for seq_length {}", name, stream_tokens,
           seq_length);
  stream_tokens_ = stream_tokens;
  seq_length_ = seq_length;
  num_windows_ = (stream_tokens - 1) / seq_length;
  seed_ = seed;
  shuffle_stream_ = rng_stream("data/shuffle/" + name);
}

int64_t TokenWindowSource::window_of(int64_t i) const {
  MT_CHECK(i >= 0, "negative sample index {}", i);
  return shuffled_index(i % num_windows_, num_windows_, seed_, shuffle_stream_, i / num_windows_);
}

void TokenWindowSource::get(int64_t i, int32_t* tokens) const {
  read_stream(window_of(i) * seq_length_, seq_length_ + 1, tokens);
}

GPTWindowDataset::GPTWindowDataset(const IndexedDataset& dataset, DocumentRange docs, int64_t seq_length,
                                   uint64_t seed, const std::string& name)
    : ds_(dataset), docs_(docs) {
  MT_CHECK(docs.begin >= 0 && docs.begin <= docs.end && docs.end <= dataset.num_documents(),
           "document range [{}, {}) of {}", docs.begin, docs.end, dataset.num_documents());
  if (seq_length <= 0) MT_USER_ERROR("--seq-length must be positive, got {}", seq_length);
  first_seq_ = dataset.document_index(docs.begin);
  const int64_t last_seq = dataset.document_index(docs.end);
  seq_start_.resize(size_t(last_seq - first_seq_ + 1));
  seq_start_[0] = 0;
  for (int64_t s = first_seq_; s < last_seq; ++s)
    seq_start_[size_t(s - first_seq_ + 1)] = seq_start_[size_t(s - first_seq_)] + dataset.sequence_length(s);
  const int64_t tokens = seq_start_.back();
  if (tokens < seq_length + 1)
    MT_USER_ERROR("the {} split of {} (documents [{}, {})) has {} tokens, fewer than the seq_length + 1 = {} "
                  "one sample needs; change --split or --seq-length, or use more data",
                  name, dataset.prefix(), docs.begin, docs.end, tokens, seq_length + 1);
  init_windows(tokens, seq_length, seed, name);
}

void GPTWindowDataset::read_stream(int64_t offset, int64_t n, int32_t* out) const {
  MT_CHECK(offset >= 0 && n >= 0 && offset + n <= stream_tokens(), "read [{}, +{}) of {} tokens", offset, n,
           stream_tokens());
  // The last sequence starting at or before `offset` holds it (empty sequences share a start).
  size_t s = size_t(std::upper_bound(seq_start_.begin(), seq_start_.end(), offset) - seq_start_.begin()) - 1;
  int64_t local = offset - seq_start_[s];
  while (n > 0) {
    int64_t take = std::min(n, seq_start_[s + 1] - seq_start_[s] - local);
    ds_.read(first_seq_ + int64_t(s), local, take, out);
    out += take;
    n -= take;
    local = 0;
    ++s;
  }
}

MockGPTDataset::MockGPTDataset(int64_t vocab_size, int64_t seq_length, uint64_t seed, const std::string& name)
    : vocab_size_(vocab_size) {
  if (vocab_size < 3) MT_USER_ERROR("mock data needs a vocabulary of at least 3 tokens, got {}", vocab_size);
  if (seq_length <= 0) MT_USER_ERROR("--seq-length must be positive, got {}", seq_length);
  const uint64_t lengths_stream = rng_stream("data/mock/lengths");
  doc_start_.resize(kNumDocuments + 1);
  doc_start_[0] = 0;
  for (int64_t d = 0; d < kNumDocuments; ++d) {
    int64_t len = 1 + int64_t(philox_u32(0, lengths_stream, uint64_t(d)) % uint32_t(kMaxDocumentLength));
    doc_start_[size_t(d + 1)] = doc_start_[size_t(d)] + len;
  }
  if (doc_start_.back() < seq_length + 1)
    MT_USER_ERROR("--seq-length {} is longer than the mock data stream ({} tokens)", seq_length, doc_start_.back());
  init_windows(doc_start_.back(), seq_length, seed, name);
}

void MockGPTDataset::read_stream(int64_t offset, int64_t n, int32_t* out) const {
  MT_CHECK(offset >= 0 && n >= 0 && offset + n <= stream_tokens(), "read [{}, +{}) of {} tokens", offset, n,
           stream_tokens());
  size_t d = size_t(std::upper_bound(doc_start_.begin(), doc_start_.end(), offset) - doc_start_.begin()) - 1;
  int64_t k = offset - doc_start_[d];
  const int64_t cycle = vocab_size_ - 2;
  for (int64_t t = 0; t < n; ++t) {
    int64_t len = doc_start_[d + 1] - doc_start_[d];
    out[t] = k == len - 1 ? eod() : int32_t(1 + k % cycle);
    if (++k == len) {
      k = 0;
      ++d;
    }
  }
}

}  // namespace mt
