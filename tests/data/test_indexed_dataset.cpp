// The indexed dataset (.bin/.idx) reader and writer: the byte layout, every token dtype, and a
// UserError naming the file for each way a file can be broken.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/indexed_dataset.h"

namespace fs = std::filesystem;
using namespace mt;

namespace {

class IndexedDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mt_idx_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    prefix_ = (dir_ / "ds").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Documents of lengths 5, 0, 3, 7 with tokens 0, 1, 2, ... in stream order (times `scale`).
  std::vector<std::vector<int32_t>> write_sample(int64_t vocab, int32_t scale = 1) {
    std::vector<std::vector<int32_t>> docs;
    int32_t next = 0;
    for (int len : {5, 0, 3, 7}) {
      std::vector<int32_t> d;
      for (int k = 0; k < len; ++k) d.push_back((next++) * scale);
      docs.push_back(d);
    }
    IndexedDatasetWriter w(prefix_, vocab);
    for (const auto& d : docs) w.add_document(d);
    w.finalize();
    return docs;
  }

  std::vector<char> slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }
  void spit(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
  }
  template <class T> void poke(const std::string& path, size_t at, T v) {
    auto b = slurp(path);
    ASSERT_LE(at + sizeof(T), b.size());
    std::memcpy(b.data() + at, &v, sizeof(T));
    spit(path, b);
  }
  std::string idx() const { return prefix_ + ".idx"; }
  std::string bin() const { return prefix_ + ".bin"; }

  fs::path dir_;
  std::string prefix_;
};

// Opening must fail with a UserError whose message holds every one of `parts`.
void expect_open_error(const std::string& prefix, std::vector<std::string> parts) {
  try {
    IndexedDataset ds(prefix);
    FAIL() << "opened a broken dataset " << prefix;
  } catch (const UserError& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace

TEST_F(IndexedDatasetTest, WriteThenReadRoundTripsUint16) {
  auto docs = write_sample(300);
  IndexedDataset ds(prefix_);
  EXPECT_EQ(ds.dtype(), IndexDType::U16);
  ASSERT_EQ(ds.num_documents(), 4);
  ASSERT_EQ(ds.num_sequences(), 4);
  EXPECT_EQ(ds.num_tokens(), 15);
  for (int64_t d = 0; d < 4; ++d) {
    EXPECT_EQ(ds.document_range(d), std::make_pair(d, d + 1));
    EXPECT_EQ(ds.sequence_length(d), int64_t(docs[d].size()));
    EXPECT_EQ(ds.read(d), docs[d]);
  }
  int32_t mid[2];
  ds.read(3, 2, 2, mid);
  EXPECT_EQ(mid[0], docs[3][2]);
  EXPECT_EQ(mid[1], docs[3][3]);
  EXPECT_EQ(ds.max_token_id(), 14);
}

TEST_F(IndexedDatasetTest, FilesHaveMegatronsExactByteLayout) {
  write_sample(300);
  auto b = slurp(idx());
  const size_t S = 4, D = 5;
  ASSERT_EQ(b.size(), 34 + 4 * S + 8 * S + 8 * D);
  EXPECT_EQ(std::memcmp(b.data(), "MMIDIDX\0\0", 9), 0);
  uint64_t version, s, d;
  std::memcpy(&version, b.data() + 9, 8);
  std::memcpy(&s, b.data() + 18, 8);
  std::memcpy(&d, b.data() + 26, 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(b[17], 8);  // uint16
  EXPECT_EQ(s, S);
  EXPECT_EQ(d, D);
  int64_t ptr[4], docidx[5];
  std::memcpy(ptr, b.data() + 34 + 4 * S, sizeof(ptr));
  std::memcpy(docidx, b.data() + 34 + 12 * S, sizeof(docidx));
  EXPECT_EQ(std::vector<int64_t>(ptr, ptr + 4), (std::vector<int64_t>{0, 10, 10, 16}));
  EXPECT_EQ(std::vector<int64_t>(docidx, docidx + 5), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(slurp(bin()).size(), 15u * 2);
}

TEST_F(IndexedDatasetTest, LargeVocabularyWritesInt32) {
  auto docs = write_sample(70000, 4000);  // tokens up to 56000 ... 14 * 4000
  IndexedDataset ds(prefix_);
  EXPECT_EQ(ds.dtype(), IndexDType::I32);
  EXPECT_EQ(ds.read(3), docs[3]);
  EXPECT_EQ(slurp(bin()).size(), 15u * 4);
  EXPECT_EQ(ds.max_token_id(), 14 * 4000);
  EXPECT_EQ(index_dtype_for_vocab(65499), IndexDType::U16);
  EXPECT_EQ(index_dtype_for_vocab(65500), IndexDType::I32);
}

TEST_F(IndexedDatasetTest, ReadsEveryTokenDtype) {
  write_sample(300);
  // Rewrite .bin in each dtype Megatron defines and patch the dtype code and pointers.
  for (uint8_t code = 1; code <= 8; ++code) {
    const size_t isz = index_dtype_size(IndexDType(code));
    std::vector<char> b(15 * isz);
    for (int t = 0; t < 15; ++t) {
      char* p = b.data() + t * isz;
      switch (IndexDType(code)) {
        case IndexDType::U8: { uint8_t v = uint8_t(t); std::memcpy(p, &v, 1); break; }
        case IndexDType::I8: { int8_t v = int8_t(t); std::memcpy(p, &v, 1); break; }
        case IndexDType::I16: { int16_t v = int16_t(t); std::memcpy(p, &v, 2); break; }
        case IndexDType::U16: { uint16_t v = uint16_t(t); std::memcpy(p, &v, 2); break; }
        case IndexDType::I32: { int32_t v = t; std::memcpy(p, &v, 4); break; }
        case IndexDType::I64: { int64_t v = t; std::memcpy(p, &v, 8); break; }
        case IndexDType::F32: { float v = float(t); std::memcpy(p, &v, 4); break; }
        case IndexDType::F64: { double v = t; std::memcpy(p, &v, 8); break; }
      }
    }
    spit(bin(), b);
    poke<uint8_t>(idx(), 17, code);
    const int64_t starts[4] = {0, 5, 5, 8};
    for (int s = 0; s < 4; ++s) poke<int64_t>(idx(), 34 + 16 + 8 * s, starts[s] * int64_t(isz));
    IndexedDataset ds(prefix_);
    EXPECT_EQ(ds.read(2), (std::vector<int32_t>{5, 6, 7})) << index_dtype_name(IndexDType(code));
    EXPECT_EQ(ds.max_token_id(), 14) << index_dtype_name(IndexDType(code));
  }
}

TEST_F(IndexedDatasetTest, WriterWithoutFinalizeLeavesNoFiles) {
  {
    IndexedDatasetWriter w(prefix_, 300);
    std::vector<int32_t> d = {1, 2, 3};
    w.add_document(d);
  }
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(IndexedDatasetTest, FinalizeLeavesOnlyTheTwoFiles) {
  write_sample(300);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ds.bin", "ds.idx"}));
}

TEST_F(IndexedDatasetTest, WriterRejectsTokensOutsideTheVocabulary) {
  IndexedDatasetWriter w(prefix_, 300);
  std::vector<int32_t> d = {1, 300};
  EXPECT_THROW(w.add_document(d), UserError);
  std::vector<int32_t> neg = {-1};
  EXPECT_THROW(w.add_document(neg), UserError);
}

TEST_F(IndexedDatasetTest, MissingIndexFileIsNamed) { expect_open_error(prefix_, {idx()}); }

TEST_F(IndexedDatasetTest, MissingBinFileIsNamed) {
  write_sample(300);
  fs::remove(bin());
  expect_open_error(prefix_, {bin()});
}

TEST_F(IndexedDatasetTest, WrongMagicIsNamed) {
  write_sample(300);
  poke<char>(idx(), 0, 'X');
  expect_open_error(prefix_, {idx(), "magic"});
}

TEST_F(IndexedDatasetTest, Version2IsRejected) {
  write_sample(300);
  poke<uint64_t>(idx(), 9, 2);
  expect_open_error(prefix_, {idx(), "version 2"});
}

TEST_F(IndexedDatasetTest, DtypeCode9IsRejected) {
  write_sample(300);
  poke<uint8_t>(idx(), 17, 9);
  expect_open_error(prefix_, {idx(), "dtype code 9"});
}

TEST_F(IndexedDatasetTest, TruncatedIndexIsNamed) {
  write_sample(300);
  auto b = slurp(idx());
  b.resize(b.size() - 8);
  spit(idx(), b);
  expect_open_error(prefix_, {idx(), "truncated"});
  b.resize(20);  // inside the header
  spit(idx(), b);
  expect_open_error(prefix_, {idx(), "truncated"});
}

TEST_F(IndexedDatasetTest, TruncatedBinIsNamed) {
  write_sample(300);
  auto b = slurp(bin());
  b.resize(b.size() - 2);
  spit(bin(), b);
  expect_open_error(prefix_, {idx(), bin(), "past the end"});
}

TEST_F(IndexedDatasetTest, PointerPastTheEndIsNamed) {
  write_sample(300);
  poke<int64_t>(idx(), 34 + 16 + 8 * 2, 1000);  // sequence 2 at byte 1000 of a 30-byte .bin
  expect_open_error(prefix_, {idx(), "sequence 2", "past the end"});
}

TEST_F(IndexedDatasetTest, NonMonotoneDocumentIndexIsNamed) {
  write_sample(300);
  poke<int64_t>(idx(), 34 + 48 + 8 * 2, 0);  // document_indices = 0 1 0 3 4
  expect_open_error(prefix_, {idx(), "monotone"});
}

TEST_F(IndexedDatasetTest, DocumentIndexMustEndAtTheSequenceCount) {
  write_sample(300);
  poke<int64_t>(idx(), 34 + 48 + 8 * 4, 3);
  expect_open_error(prefix_, {idx(), "ends at 3"});
}

TEST_F(IndexedDatasetTest, TrailingGarbageInIndexIsRejected) {
  write_sample(300);
  auto b = slurp(idx());
  b.insert(b.end(), 3, '\0');
  spit(idx(), b);
  expect_open_error(prefix_, {idx(), "unexpected bytes"});
}

TEST_F(IndexedDatasetTest, MultimodalSequenceModesAreAccepted) {
  auto docs = write_sample(300);
  auto b = slurp(idx());
  b.insert(b.end(), 4, '\0');  // one mode byte per sequence
  spit(idx(), b);
  IndexedDataset ds(prefix_);
  EXPECT_EQ(ds.read(3), docs[3]);
}
