// safetensors: what we write reads back as views of the file, and a broken file is a UserError
// that names the file (and the tensor, where one is to blame).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/half.h"

namespace fs = std::filesystem;
using namespace mt;

namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mt_st_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "model.safetensors").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A file with this header text and `data_bytes` zero bytes of data.
  void write_raw(const std::string& header, size_t data_bytes) {
    std::ofstream f(path_, std::ios::binary | std::ios::trunc);
    uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f.write(header.data(), std::streamsize(header.size()));
    std::string zeros(data_bytes, '\0');
    f.write(zeros.data(), std::streamsize(zeros.size()));
  }

  void expect_error(std::vector<std::string> parts) {
    try {
      SafetensorsReader r(path_);
      FAIL() << "opened a broken file";
    } catch (const UserError& e) {
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
  std::string path_;
};

template <class T> Tensor filled(const Shape& shape, DType dt, T (*f)(int64_t)) {
  Tensor t = Tensor::empty(shape, dt);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<T>()[i] = f(i);
  return t;
}

}  // namespace

TEST_F(SafetensorsTest, WriteThenReadRoundTripsEveryDtype) {
  Tensor f32 = filled<float>({2, 3}, DType::F32, [](int64_t i) { return 0.5f * float(i) - 1.0f; });
  Tensor b16 = filled<bf16>({4}, DType::BF16, [](int64_t i) { return to_bf16(float(i) + 0.25f); });
  Tensor h16 = filled<f16>({3, 1}, DType::F16, [](int64_t i) { return to_f16(-float(i)); });
  Tensor i64 = filled<int64_t>({}, DType::I64, [](int64_t) { return int64_t(1) << 40; });
  Tensor i32 = filled<int32_t>({5}, DType::I32, [](int64_t i) { return int32_t(-i); });
  Tensor u16 = filled<uint16_t>({7}, DType::U16, [](int64_t i) { return uint16_t(65535 - i); });
  Tensor empty = Tensor::empty({0, 4}, DType::F32);
  write_safetensors(path_,
                    {{"w.f32", f32}, {"w.bf16", b16}, {"w.f16", h16}, {"step", i64}, {"ids", i32},
                     {"u", u16}, {"none", empty}},
                    {{"format", "pt"}});

  SafetensorsReader r(path_);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"ids", "none", "step", "u", "w.bf16", "w.f16", "w.f32"}));
  EXPECT_EQ(r.metadata().at("format"), "pt");
  for (const auto& [name, want] : std::vector<std::pair<std::string, Tensor>>{
           {"w.f32", f32}, {"w.bf16", b16}, {"w.f16", h16}, {"step", i64}, {"ids", i32}, {"u", u16}, {"none", empty}}) {
    Tensor got = r.get(name);
    EXPECT_EQ(got.dtype(), want.dtype()) << name;
    EXPECT_EQ(got.shape(), want.shape()) << name;
    ASSERT_EQ(got.nbytes(), want.nbytes()) << name;
    if (want.nbytes()) {
      EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << name;
    }
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got.raw()) % dtype_size(got.dtype()), 0u) << name;
  }
  EXPECT_EQ(r.entry("w.f32").dtype, "F32");
  EXPECT_EQ(r.entry("w.f32").end - r.entry("w.f32").begin, 24u);
}

TEST_F(SafetensorsTest, WriteReplacesAtomicallyAndLeavesNoTemporary) {
  write_safetensors(path_, {{"a", Tensor::zeros({2}, DType::F32)}});
  write_safetensors(path_, {{"b", Tensor::zeros({3}, DType::I32)}});
  SafetensorsReader r(path_);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"b"}));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SafetensorsTest, DuplicateOrReservedNamesAreRejected) {
  Tensor t = Tensor::zeros({1}, DType::F32);
  EXPECT_THROW(write_safetensors(path_, {{"a", t}, {"a", t}}), UserError);
  EXPECT_THROW(write_safetensors(path_, {{"__metadata__", t}}), UserError);
  EXPECT_FALSE(fs::exists(path_));
}

TEST_F(SafetensorsTest, ReadsAFileWrittenByHand) {
  // What the reference library writes for {"x": torch.tensor([1., 2.], dtype=float32)}.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_raw(header, 0);
  {
    std::ofstream f(path_, std::ios::binary | std::ios::app);
    float v[2] = {1.0f, 2.0f};
    f.write(reinterpret_cast<const char*>(v), 8);
  }
  SafetensorsReader r(path_);
  Tensor x = r.get("x");
  EXPECT_EQ(x.data<float>()[0], 1.0f);
  EXPECT_EQ(x.data<float>()[1], 2.0f);
}

TEST_F(SafetensorsTest, TooShortForAHeaderLength) {
  std::ofstream(path_, std::ios::binary) << "abc";
  expect_error({path_, "truncated"});
}

TEST_F(SafetensorsTest, HeaderLongerThanTheFile) {
  write_raw(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  fs::resize_file(path_, 30);
  expect_error({path_, "truncated"});
}

TEST_F(SafetensorsTest, HeaderThatIsNotJson) {
  write_raw("{\"x\": [1, 2", 0);
  expect_error({path_, "JSON"});
  write_raw("[1, 2]", 0);
  expect_error({path_, "not a JSON object"});
}

TEST_F(SafetensorsTest, OffsetsPastTheDataNameTheTensor) {
  write_raw(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"big":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
            8);
  expect_error({path_, "\"big\"", "out of range"});
}

TEST_F(SafetensorsTest, ShapeThatDisagreesWithOffsetsNamesTheTensor) {
  write_raw(R"({"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8);
  expect_error({path_, "\"x\"", "6 bytes"});
}

TEST_F(SafetensorsTest, MalformedEntriesNameTheTensor) {
  write_raw(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", 8);
  expect_error({path_, "\"x\"", "shape"});
  write_raw(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8);
  expect_error({path_, "\"x\"", "out of range"});
  write_raw(R"({"x":{"shape":[2],"data_offsets":[0,8]}})", 8);
  expect_error({path_, "\"x\"", "dtype"});
  write_raw(R"({"__metadata__":{"a":1}})", 0);
  expect_error({path_, "__metadata__"});
}

TEST_F(SafetensorsTest, UnsupportedDtypeIsAnErrorOnlyWhenRead) {
  write_raw(R"({"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"f":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
            16);
  SafetensorsReader r(path_);
  EXPECT_EQ(r.get("f").numel(), 2);
  try {
    r.get("d");
    FAIL() << "read an F64 tensor";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("\"d\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("F64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.get("missing"), UserError);
}

TEST_F(SafetensorsTest, UnalignedTensorIsCopied) {
  // Header of 6 bytes: the data section starts at byte 14, so F32 data is misaligned.
  std::string header = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.append((8 - header.size() % 8) % 8 + 2, ' ');
  write_raw(header, 0);
  {
    std::ofstream f(path_, std::ios::binary | std::ios::app);
    float v = 3.5f;
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
  SafetensorsReader r(path_);
  Tensor x = r.get("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw()) % 4, 0u);
  EXPECT_EQ(x.data<float>()[0], 3.5f);
}

// The format's rules beyond a well-formed entry: the byte ranges tile the data section, keys are
// unique, dtypes are the format's.
TEST_F(SafetensorsTest, OverlappingOffsetsNameBothTensors) {
  write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            12);
  expect_error({path_, "\"b\"", "overlap", "\"a\""});
}

TEST_F(SafetensorsTest, GapBetweenTensorsIsAnError) {
  write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            12);
  expect_error({path_, "\"b\"", "gap of 4 bytes", "\"a\""});
  write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
  expect_error({path_, "\"a\"", "gap of 4 bytes after the header"});
}

TEST_F(SafetensorsTest, BytesAfterTheLastTensorAreAnError) {
  write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12);
  expect_error({path_, "cover 4 bytes", "has 12"});
}

TEST_F(SafetensorsTest, TruncatedDataNamesTheTensor) {
  write_safetensors(path_, {{"w", Tensor::zeros({4, 4}, DType::F32)}});
  fs::resize_file(path_, fs::file_size(path_) - 1);
  expect_error({path_, "\"w\"", "truncated"});
}

TEST_F(SafetensorsTest, UnknownDtypeIsAnErrorAtOpen) {
  write_raw(R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4);
  expect_error({path_, "\"a\"", "unknown dtype \"F12\""});
}

TEST_F(SafetensorsTest, DuplicateKeyIsAnError) {
  write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
            4);
  expect_error({path_, "key \"a\" twice"});
  write_raw(R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4);
  expect_error({path_, "key \"dtype\" twice"});
}

TEST_F(SafetensorsTest, WriterAddsFormatPtAndTilesTheData) {
  write_safetensors(path_, {{"h", Tensor::zeros({3}, DType::BF16)}, {"f", Tensor::zeros({2}, DType::F32)}});
  SafetensorsReader r(path_);
  EXPECT_EQ(r.metadata().at("format"), "pt");
  // Larger elements first: f at 0, then h; the file ends where h does.
  EXPECT_EQ(r.entry("f").begin, 0u);
  EXPECT_EQ(r.entry("h").begin, 8u);
  EXPECT_EQ(r.entry("h").end, 14u);
}

class SafetensorsWriterTest : public SafetensorsTest, public ::testing::WithParamInterface<bool> {};
INSTANTIATE_TEST_SUITE_P(ForegroundAndBackground, SafetensorsWriterTest, ::testing::Bool());

TEST_P(SafetensorsWriterTest, StreamingWriterWritesInDataOrderAndRewritesMetadata) {
  Tensor a = filled<float>({2, 2}, DType::F32, [](int64_t i) { return float(i); });
  Tensor b = filled<bf16>({3}, DType::BF16, [](int64_t i) { return to_bf16(float(-i)); });
  {
    SafetensorsWriter w(path_, {{"b", DType::BF16, {3}}, {"a", DType::F32, {2, 2}}}, {{"crc", "00000000"}},
                        GetParam());
    ASSERT_EQ(w.data_order(), (std::vector<size_t>{1, 0}));
    w.write(a);
    a = Tensor();  // the writer keeps what it still has to write
    w.write(b);
    EXPECT_THROW(w.rewrite_metadata({{"crc", "000000001"}, {"more", "x"}}), UserError);
    w.rewrite_metadata({{"crc", "89abcdef"}});
    EXPECT_FALSE(fs::exists(path_));  // not before finish()
    w.finish();
  }
  SafetensorsReader r(path_);
  EXPECT_EQ(r.metadata().at("crc"), "89abcdef");
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(r.get("a").data<float>()[i], float(i));
  EXPECT_EQ(std::memcmp(r.get("b").raw(), b.raw(), b.nbytes()), 0);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_P(SafetensorsWriterTest, StreamingWriterAbandonedLeavesNothing) {
  {
    SafetensorsWriter w(path_, {{"a", DType::F32, {2}}}, {}, GetParam());
    w.write(Tensor::zeros({2}, DType::F32));
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}
