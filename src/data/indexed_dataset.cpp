#include "data/indexed_dataset.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/error.h"

namespace mt {
namespace {

static_assert(std::endian::native == std::endian::little, "the .bin/.idx layout is little-endian");

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

// The index arrays start at byte 34, so they are not aligned: load through memcpy.
template <class T> T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T> void store(std::vector<uint8_t>& buf, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  buf.insert(buf.end(), p, p + sizeof(T));
}

bool valid_dtype_code(uint8_t c) { return c >= 1 && c <= 8; }

template <class T> void convert(const uint8_t* src, int64_t n, int32_t* out, const std::string& bin) {
  for (int64_t k = 0; k < n; ++k) {
    T v = load<T>(src + k * int64_t(sizeof(T)));
    if constexpr (sizeof(T) > 4 || std::is_floating_point_v<T>) {
      if (!(v >= T(std::numeric_limits<int32_t>::min()) && v <= T(std::numeric_limits<int32_t>::max())))
        MT_USER_ERROR("{}: token value {} does not fit in int32", bin, double(v));
    }
    out[k] = int32_t(v);
  }
}

}  // namespace

size_t index_dtype_size(IndexDType t) {
  switch (t) {
    case IndexDType::U8: case IndexDType::I8: return 1;
    case IndexDType::I16: case IndexDType::U16: return 2;
    case IndexDType::I32: case IndexDType::F32: return 4;
    case IndexDType::I64: case IndexDType::F64: return 8;
  }
  return 0;
}

const char* index_dtype_name(IndexDType t) {
  switch (t) {
    case IndexDType::U8: return "uint8";
    case IndexDType::I8: return "int8";
    case IndexDType::I16: return "int16";
    case IndexDType::I32: return "int32";
    case IndexDType::I64: return "int64";
    case IndexDType::F64: return "float64";
    case IndexDType::F32: return "float32";
    case IndexDType::U16: return "uint16";
  }
  return "?";
}

IndexDType index_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size < 65500 ? IndexDType::U16 : IndexDType::I32;
}

IndexedDataset::IndexedDataset(const std::string& prefix)
    : prefix_(prefix), idx_path_(prefix + ".idx"), bin_path_(prefix + ".bin") {
  idx_ = MappedFile(idx_path_);
  bin_ = MappedFile(bin_path_);
  const std::string& ip = idx_path_;
  const uint8_t* p = idx_.data();
  const size_t size = idx_.size();

  if (size < sizeof(kMagic) || std::memcmp(p, kMagic, sizeof(kMagic)) != 0)
    MT_USER_ERROR("{}: not a Megatron indexed dataset index (bad magic; expected \"MMIDIDX\\0\\0\")", ip);
  if (size < kHeaderBytes)
    MT_USER_ERROR("{}: truncated header ({} bytes, expected at least {})", ip, size, kHeaderBytes);
  uint64_t version = load<uint64_t>(p + 9);
  if (version != kVersion) MT_USER_ERROR("{}: unsupported index version {} (expected {})", ip, version, kVersion);
  uint8_t code = p[17];
  if (!valid_dtype_code(code)) MT_USER_ERROR("{}: unknown token dtype code {} (expected 1..8)", ip, int(code));
  dtype_ = IndexDType(code);
  uint64_t S = load<uint64_t>(p + 18), D = load<uint64_t>(p + 26);

  // Sizes first in a way that cannot overflow: each array entry takes at least one byte.
  const uint64_t body = size - kHeaderBytes;
  if (S > body / 12 || D > body / 8 || 12 * S + 8 * D > body)
    MT_USER_ERROR("{}: truncated: {} bytes, but the header promises {} sequences and {} document entries ({} bytes)",
                  ip, size, S, D, double(kHeaderBytes) + 12.0 * double(S) + 8.0 * double(D));
  const uint64_t extra = body - 12 * S - 8 * D;
  if (extra != 0 && extra != S)  // S trailing bytes are the sequence modes of a multimodal dataset
    MT_USER_ERROR("{}: {} unexpected bytes after the document index", ip, extra);
  if (D == 0) MT_USER_ERROR("{}: empty document index (it must hold at least the entry 0)", ip);

  num_sequences_ = int64_t(S);
  num_doc_entries_ = int64_t(D);
  lengths_ = p + kHeaderBytes;
  pointers_ = lengths_ + 4 * S;
  doc_idx_ = pointers_ + 8 * S;

  if (document_index(0) != 0) MT_USER_ERROR("{}: document index starts at {} (expected 0)", ip, document_index(0));
  for (int64_t k = 1; k < num_doc_entries_; ++k) {
    if (document_index(k) < document_index(k - 1))
      MT_USER_ERROR("{}: document index is not monotone: entry {} is {} after {}", ip, k, document_index(k),
                    document_index(k - 1));
  }
  if (document_index(num_doc_entries_ - 1) != num_sequences_)
    MT_USER_ERROR("{}: document index ends at {} (expected the sequence count {})", ip,
                  document_index(num_doc_entries_ - 1), num_sequences_);

  const int64_t isz = int64_t(index_dtype_size(dtype_));
  const int64_t bin_size = int64_t(bin_.size());
  for (int64_t i = 0; i < num_sequences_; ++i) {
    int64_t len = load<int32_t>(lengths_ + 4 * i);
    int64_t ptr = load<int64_t>(pointers_ + 8 * i);
    if (len < 0) MT_USER_ERROR("{}: sequence {} has negative length {}", ip, i, len);
    if (ptr < 0 || ptr > bin_size || len * isz > bin_size - ptr)
      MT_USER_ERROR("{}: sequence {} ({} tokens of {} at byte {}) runs past the end of {} ({} bytes); "
                    "the .bin is truncated or does not belong to this .idx",
                    ip, i, len, index_dtype_name(dtype_), ptr, bin_path_, bin_size);
    num_tokens_ += len;
  }
}

int64_t IndexedDataset::sequence_length(int64_t i) const {
  MT_CHECK(i >= 0 && i < num_sequences_, "sequence {} of {}", i, num_sequences_);
  return load<int32_t>(lengths_ + 4 * i);
}

int64_t IndexedDataset::sequence_pointer(int64_t i) const {
  MT_CHECK(i >= 0 && i < num_sequences_, "sequence {} of {}", i, num_sequences_);
  return load<int64_t>(pointers_ + 8 * i);
}

int64_t IndexedDataset::document_index(int64_t k) const {
  MT_CHECK(k >= 0 && k < num_doc_entries_, "document index entry {} of {}", k, num_doc_entries_);
  return load<int64_t>(doc_idx_ + 8 * k);
}

std::pair<int64_t, int64_t> IndexedDataset::document_range(int64_t d) const {
  MT_CHECK(d >= 0 && d < num_documents(), "document {} of {}", d, num_documents());
  return {document_index(d), document_index(d + 1)};
}

void IndexedDataset::read(int64_t i, int64_t offset, int64_t n, int32_t* out) const {
  const int64_t len = sequence_length(i);
  MT_CHECK(offset >= 0 && n >= 0 && offset + n <= len, "read [{}, +{}) of sequence {} with {} tokens", offset, n,
           i, len);
  const int64_t isz = int64_t(index_dtype_size(dtype_));
  const uint8_t* src = bin_.data() + sequence_pointer(i) + offset * isz;
  switch (dtype_) {
    case IndexDType::U8: convert<uint8_t>(src, n, out, bin_path_); break;
    case IndexDType::I8: convert<int8_t>(src, n, out, bin_path_); break;
    case IndexDType::I16: convert<int16_t>(src, n, out, bin_path_); break;
    case IndexDType::U16: convert<uint16_t>(src, n, out, bin_path_); break;
    case IndexDType::I32: if (n) std::memcpy(out, src, size_t(n) * 4); break;
    case IndexDType::I64: convert<int64_t>(src, n, out, bin_path_); break;
    case IndexDType::F32: convert<float>(src, n, out, bin_path_); break;
    case IndexDType::F64: convert<double>(src, n, out, bin_path_); break;
  }
}

std::vector<int32_t> IndexedDataset::read(int64_t i) const {
  std::vector<int32_t> v(size_t(sequence_length(i)));
  read(i, 0, int64_t(v.size()), v.data());
  return v;
}

IndexedDataset::TokenIdRange IndexedDataset::token_id_range() const {
  std::lock_guard<std::mutex> lock(range_mu_);
  if (!range_known_) {
    std::vector<int32_t> buf(size_t(1) << 16);
    TokenIdRange r{std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()};
    for (int64_t i = 0; i < num_sequences_; ++i) {
      const int64_t len = sequence_length(i);
      for (int64_t o = 0; o < len; o += int64_t(buf.size())) {
        const int64_t n = std::min<int64_t>(int64_t(buf.size()), len - o);
        read(i, o, n, buf.data());
        const auto [lo, hi] = std::minmax_element(buf.data(), buf.data() + n);
        r.min = std::min<int64_t>(r.min, *lo);
        r.max = std::max<int64_t>(r.max, *hi);
      }
    }
    range_ = num_tokens_ > 0 ? r : TokenIdRange{};
    range_known_ = true;
  }
  return range_;
}

void IndexedDataset::set_token_id_range(TokenIdRange r) const {
  std::lock_guard<std::mutex> lock(range_mu_);
  range_ = r;
  range_known_ = true;
}

IndexedDatasetWriter::IndexedDatasetWriter(const std::string& prefix, int64_t vocab_size)
    : prefix_(prefix),
      vocab_size_(vocab_size),
      dtype_(index_dtype_for_vocab(vocab_size)),
      bin_(prefix + ".bin"),
      idx_(prefix + ".idx") {
  if (vocab_size <= 0 || vocab_size > int64_t(std::numeric_limits<int32_t>::max()) + 1)
    MT_USER_ERROR("{}: vocabulary size {} out of range", prefix, vocab_size);
}

IndexedDatasetWriter::IndexedDatasetWriter(const std::string& prefix, IndexDType dtype)
    : prefix_(prefix), vocab_size_(0), dtype_(dtype), bin_(prefix + ".bin"), idx_(prefix + ".idx") {}

void IndexedDatasetWriter::add_document(std::span<const int32_t> tokens) {
  const int32_t len = tokens.size() > size_t(std::numeric_limits<int32_t>::max()) ? -1 : int32_t(tokens.size());
  if (len < 0)
    MT_USER_ERROR("{}: document {} has {} tokens, more than int32 lengths hold", prefix_, num_documents(), tokens.size());
  add_document(tokens, std::span<const int32_t>(&len, 1));
}

void IndexedDatasetWriter::add_document(std::span<const int32_t> tokens, std::span<const int32_t> sequence_lengths) {
  MT_CHECK(!finalized_, "add_document after finalize of {}", prefix_);
  int64_t total = 0;
  for (int32_t n : sequence_lengths) {
    MT_CHECK(n >= 0, "negative sequence length {}", n);
    total += n;
  }
  MT_CHECK(total == int64_t(tokens.size()), "sequence lengths sum to {} for {} tokens", total, tokens.size());
  buf_.clear();
  const bool u16 = dtype_ == IndexDType::U16;
  MT_CHECK(u16 || dtype_ == IndexDType::I32, "writing {} tokens is not supported", index_dtype_name(dtype_));
  buf_.resize(tokens.size() * (u16 ? 2 : 4));
  const int64_t limit = vocab_size_ > 0 ? vocab_size_ : (u16 ? 65536 : int64_t(1) << 31);
  for (size_t k = 0; k < tokens.size(); ++k) {
    const int32_t t = tokens[k];
    if (t < 0 || t >= limit)
      MT_USER_ERROR("{}: token {} in document {} is outside the vocabulary [0, {})", prefix_, t, num_documents(), limit);
    if (u16) {
      const auto v = uint16_t(t);
      std::memcpy(buf_.data() + 2 * k, &v, 2);
    } else {
      std::memcpy(buf_.data() + 4 * k, &t, 4);
    }
  }
  bin_.write(buf_.data(), buf_.size());
  const int64_t isz = u16 ? 2 : 4;
  for (int32_t n : sequence_lengths) {
    lengths_.push_back(n);
    pointers_.push_back(bin_bytes_);
    bin_bytes_ += n * isz;
  }
  doc_idx_.push_back(int64_t(lengths_.size()));
}

void IndexedDatasetWriter::add_index(const IndexedDataset& other) {
  MT_CHECK(!finalized_, "add_index after finalize of {}", prefix_);
  if (other.dtype() != dtype_)
    MT_USER_ERROR("cannot merge {} (tokens of {}) into {} (tokens of {}); all inputs must have one token dtype",
                  other.prefix(), index_dtype_name(other.dtype()), prefix_, index_dtype_name(dtype_));
  const int64_t base_seq = int64_t(lengths_.size());
  for (int64_t i = 0; i < other.num_sequences(); ++i) {
    lengths_.push_back(int32_t(other.sequence_length(i)));
    pointers_.push_back(bin_bytes_ + other.sequence_pointer(i));
  }
  for (int64_t k = 1; k <= other.num_documents(); ++k) doc_idx_.push_back(base_seq + other.document_index(k));
  auto bytes = other.bin_bytes();
  bin_.write(bytes.data(), bytes.size());
  bin_bytes_ += int64_t(bytes.size());
}

void IndexedDatasetWriter::finalize() {
  MT_CHECK(!finalized_, "double finalize of {}", prefix_);
  finalized_ = true;
  const uint64_t S = lengths_.size();
  std::vector<uint8_t> h;
  h.insert(h.end(), kMagic, kMagic + sizeof(kMagic));
  store<uint64_t>(h, kVersion);
  store<uint8_t>(h, uint8_t(dtype_));
  store<uint64_t>(h, S);
  store<uint64_t>(h, doc_idx_.size());
  idx_.write(h.data(), h.size());
  idx_.write(lengths_.data(), S * 4);
  idx_.write(pointers_.data(), S * 8);
  idx_.write(doc_idx_.data(), doc_idx_.size() * 8);
  // .bin first: a reader that finds the new .idx finds the .bin it describes.
  bin_.commit();
  idx_.commit();
}

}  // namespace mt
