#include "data/gpt_dataset.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/rng.h"
#include "data/dataset_indices.h"

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

GPTDataset::GPTDataset(std::shared_ptr<const IndexedDataset> dataset, DocumentRange sequences, int64_t num_samples,
                       const GPTDatasetConfig& config, Split split)
    : ds_(std::move(dataset)), seqs_(sequences), requested_(num_samples), cfg_(config), split_(split) {
  MT_CHECK(seqs_.begin >= 0 && seqs_.begin <= seqs_.end && seqs_.end <= ds_->num_sequences(),
           "sequence range [{}, {}) of {}", seqs_.begin, seqs_.end, ds_->num_sequences());
  if (cfg_.seq_length <= 0) MT_USER_ERROR("--seq-length must be positive, got {}", cfg_.seq_length);
  if (cfg_.seed > 0xffffffffull) MT_USER_ERROR("--seed {} is too large for the data shuffles (at most 2^32 - 1)", cfg_.seed);
  if (cfg_.eod_mask_loss && cfg_.eod < 0)
    MT_USER_ERROR("--eod-mask-loss needs a tokenizer with an end-of-document token (give --tokenizer-type)");
  MT_CHECK(num_samples > 0, "{} samples requested", num_samples);
  for (int64_t s = seqs_.begin; s < seqs_.end; ++s) tokens_per_epoch_ += ds_->sequence_length(s);
  if (tokens_per_epoch_ <= (cfg_.add_extra_token ? 1 : 0))
    MT_USER_ERROR("the {} split of {} (sequences [{}, {}) of --split {}) has {} tokens, too few for one sample; "
                  "change --split or use more data",
                  split_name(split_), ds_->prefix(), seqs_.begin, seqs_.end, cfg_.split, tokens_per_epoch_);
  num_epochs_ = num_epochs_for(tokens_per_epoch_, requested_, cfg_.seq_length, cfg_.add_extra_token);
  if (!cfg_.cache_dir.empty()) {
    const std::string desc = description();
    uint64_t h = 1469598103934665603ull;
    for (char c : desc) h = (h ^ uint8_t(c)) * 1099511628211ull;
    cache_prefix_ = fmt::format("{}/{:016x}-GPTDataset-{}-", cfg_.cache_dir, h, split_name(split_));
    if (load_cache()) return;
  }
  build();
}

std::string GPTDataset::description() const {
  return fmt::format(
      "megatron.cpp GPTDataset indices v1\n"
      "dataset: {}\nsequences in dataset: {}\ntokens in dataset: {}\n"
      "split: {} (--split {}), sequences [{}, {})\n"
      "samples requested: {}\nseq_length: {}\nseed: {}\nadd_extra_token: {}\ndrop_last_partial_sequence: {}\n",
      std::filesystem::absolute(ds_->prefix()).lexically_normal().string(), ds_->num_sequences(), ds_->num_tokens(),
      split_name(split_), cfg_.split, seqs_.begin, seqs_.end, requested_, cfg_.seq_length, cfg_.seed,
      cfg_.add_extra_token, cfg_.drop_last_partial_sequence);
}

namespace {

std::string index_checksums(std::span<const int32_t> doc, std::span<const int64_t> sample,
                            std::span<const int64_t> shuffle) {
  return fmt::format("index crc32c: {} {} {}\n", crc32c_hex(crc32c(doc.data(), doc.size_bytes())),
                     crc32c_hex(crc32c(sample.data(), sample.size_bytes())),
                     crc32c_hex(crc32c(shuffle.data(), shuffle.size_bytes())));
}

}  // namespace

bool GPTDataset::load_cache() {
  std::string text;
  try {
    text = read_regular_file(cache_prefix_ + "description.txt", "", 1 << 20);
  } catch (const UserError&) {
    return false;  // missing or unreadable: rebuilt
  }
  // description(), then the indices' checksums: a flipped bit that keeps an index in range would
  // otherwise reorder the data silently.
  const std::string desc = description();
  if (text.compare(0, desc.size(), desc) != 0) return false;
  doc_file_ = read_npy_i32(cache_prefix_ + "document_index.npy");
  sample_file_ = read_npy_i64(cache_prefix_ + "sample_index.npy", 2);
  shuffle_file_ = read_npy_i64(cache_prefix_ + "shuffle_index.npy");
  if (!doc_file_ || !sample_file_ || !shuffle_file_) return false;
  // Cheap consistency checks; anything off means rebuilding.
  const int64_t n_doc = int64_t(doc_file_->data.size()), n_sample = int64_t(sample_file_->data.size()) / 2;
  if (n_doc != (seqs_.end - seqs_.begin) * num_epochs_ || n_sample < 2 ||
      int64_t(shuffle_file_->data.size()) != n_sample - 1)
    return false;
  for (int32_t d : doc_file_->data)
    if (d < seqs_.begin || d >= seqs_.end) return false;
  for (int64_t k = 0; k < n_sample; ++k)
    if (sample_file_->data[size_t(2 * k)] < 0 || sample_file_->data[size_t(2 * k)] >= n_doc) return false;
  for (int64_t v : shuffle_file_->data)
    if (v < 0 || v >= n_sample - 1) return false;
  if (text.substr(desc.size()) != index_checksums(doc_file_->data, sample_file_->data, shuffle_file_->data))
    return false;
  document_index_ = doc_file_->data;
  sample_index_ = sample_file_->data;
  shuffle_index_ = shuffle_file_->data;
  from_cache_ = true;
  return true;
}

void GPTDataset::build() {
  const int64_t L = cfg_.seq_length, extra = cfg_.add_extra_token ? 1 : 0;
  bool separate_final_epoch = false;
  int64_t sans_final = 0;
  if (num_epochs_ > 1) {
    sans_final = ((num_epochs_ - 1) * tokens_per_epoch_ - extra) / L;
    const int64_t from_final = requested_ - sans_final;
    const int64_t per_epoch = (tokens_per_epoch_ - extra) / L;
    MT_CHECK(from_final >= 0 && from_final <= per_epoch + 1, "{} samples from the final epoch of {}", from_final, per_epoch);
    separate_final_epoch = from_final < int64_t(0.80 * double(per_epoch));
  }
  NumpyRandomState rng(uint32_t(cfg_.seed));
  std::vector<int32_t> docs(size_t(seqs_.end - seqs_.begin));
  for (int64_t s = seqs_.begin; s < seqs_.end; ++s) docs[size_t(s - seqs_.begin)] = int32_t(s);
  doc_owned_ = build_document_index(docs, num_epochs_, rng, separate_final_epoch);
  std::vector<int32_t> sizes(size_t(ds_->num_sequences()));
  for (int64_t s = seqs_.begin; s < seqs_.end; ++s) sizes[size_t(s)] = int32_t(ds_->sequence_length(s));
  sample_owned_ = build_sample_index(sizes, doc_owned_, L, num_epochs_, tokens_per_epoch_,
                                     cfg_.drop_last_partial_sequence, cfg_.add_extra_token);
  const int64_t total = int64_t(sample_owned_.size()) / 2 - 1;
  shuffle_owned_ = build_shuffle_index(separate_final_epoch ? sans_final : total, total, rng);
  document_index_ = doc_owned_;
  sample_index_ = sample_owned_;
  shuffle_index_ = shuffle_owned_;
  if (cache_prefix_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(cfg_.cache_dir, ec);
  try {
    write_npy(cache_prefix_ + "document_index.npy", std::span<const int32_t>(doc_owned_));
    write_npy(cache_prefix_ + "sample_index.npy", std::span<const int64_t>(sample_owned_), 2);
    write_npy(cache_prefix_ + "shuffle_index.npy", std::span<const int64_t>(shuffle_owned_));
    const std::string desc = description() + index_checksums(doc_owned_, sample_owned_, shuffle_owned_);
    AtomicFileWriter w(cache_prefix_ + "description.txt");  // last: it marks the set complete
    w.write(desc.data(), desc.size());
    w.commit();
  } catch (const UserError& e) {
    std::fprintf(stderr, "megatron: warning: cannot cache the %s dataset indices (%s); they are kept in memory\n",
                 split_name(split_), e.what());
  }
}

void GPTDataset::get(int64_t i, int32_t* tokens) const {
  MT_CHECK(i >= 0, "negative sample index {}", i);
  const int64_t extra = cfg_.add_extra_token ? 1 : 0;
  const int64_t idx = shuffle_index_[size_t(i % num_samples())];
  const int64_t beg = sample_index_[size_t(2 * idx)], beg_off = sample_index_[size_t(2 * idx + 1)];
  const int64_t end = sample_index_[size_t(2 * idx + 2)], end_off = sample_index_[size_t(2 * idx + 3)];
  int64_t n = 0;
  for (int64_t p = beg; p <= end; ++p) {
    const int64_t seq = document_index_[size_t(p)];
    const int64_t off = p == beg ? beg_off : 0;
    const int64_t len = p < end ? ds_->sequence_length(seq) - off : end_off + extra - off;
    MT_CHECK(len >= 0 && n + len <= cfg_.seq_length + 1, "sample {} overruns", i);
    ds_->read(seq, off, len, tokens + n);
    n += len;
  }
  MT_CHECK(n == cfg_.seq_length + extra, "sample {} has {} tokens, expected {}", i, n, cfg_.seq_length + extra);
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
