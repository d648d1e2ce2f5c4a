// TensorBoard's event encoding against bytes worked out by hand from the protobuf wire format
// and the TFRecord framing (tests/python/test_tensorboard.py reads whole runs back with
// TensorBoard's own reader).
#include <gtest/gtest.h>

#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/tensorboard_writer.h"

using namespace mt;

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(char(x));
  return s;
}

uint32_t le32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | uint8_t(s[at + size_t(i)]);
  return v;
}

std::string temp_dir(const char* name) {
  auto d = std::filesystem::temp_directory_path() / fmt::format("mt_tb_{}_{}", name, getpid());
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

TEST(Protobuf, VarintsAreSevenBitGroupsLowFirst) {
  std::string s;
  pb::put_varint(s, 0);
  pb::put_varint(s, 1);
  pb::put_varint(s, 127);
  pb::put_varint(s, 128);
  pb::put_varint(s, 300);
  EXPECT_EQ(s, bytes({0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02}));
  std::string neg;
  pb::put_int64(neg, 2, -1);  // key 0x10, then ten bytes of two's complement
  EXPECT_EQ(neg, bytes({0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
}

TEST(Protobuf, KeysAndFixedWidthFields) {
  std::string s;
  pb::put_double(s, 1, 1.5);   // key (1 << 3) | 1; 1.5 = 0x3ff8000000000000
  pb::put_float(s, 2, 2.5f);   // key (2 << 3) | 5; 2.5f = 0x40200000
  pb::put_bytes(s, 3, "ab");   // key (3 << 3) | 2, length, bytes
  pb::put_int64(s, 2, 0);      // proto3 default: not written
  EXPECT_EQ(s, bytes({0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x15, 0, 0, 0x20, 0x40, 0x1a, 0x02, 'a', 'b'}));
}

// Event{wall_time: 1.5, step: 10, summary{value{tag: "lm loss", simple_value: 2.5}}}, field by
// field (the same bytes protobuf's Python serializer gives).
TEST(EventEncoding, ScalarEvent) {
  const std::string want =
      bytes({0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,  // wall_time (1, fixed64)
             0x10, 0x0a,                          // step (2, varint) 10
             0x2a, 0x10,                          // summary (5, bytes), 16 bytes
             0x0a, 0x0e,                          //   value (1, bytes), 14 bytes
             0x0a, 0x07}) +                       //     tag (1, bytes), 7 bytes
      "lm loss" +                                 //
      bytes({0x15, 0, 0, 0x20, 0x40});            //     simple_value (2, fixed32) 2.5f
  EXPECT_EQ(scalar_event(1.5, 10, "lm loss", 2.5f), want);
}

TEST(EventEncoding, FileVersionEvent) {
  EXPECT_EQ(file_version_event(1.5), bytes({0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 0x0d}) + "brain.Event:2");
}

// crc32c("123456789") = 0xe3069283 (the standard check value); rotated right by 15 bits it is
// 0x2507c60d, plus 0xa282ead8 gives 0xc78ab0e5.
TEST(TFRecord, MaskedCrc32c) { EXPECT_EQ(masked_crc32c("123456789"), 0xc78ab0e5u); }

TEST(TFRecord, Framing) {
  const std::string r = tfrecord("123456789");
  ASSERT_EQ(r.size(), 8u + 4 + 9 + 4);
  EXPECT_EQ(r.substr(0, 8), bytes({9, 0, 0, 0, 0, 0, 0, 0}));  // length, little-endian uint64
  EXPECT_EQ(le32(r, 8), masked_crc32c(r.substr(0, 8)));
  EXPECT_EQ(r.substr(12, 9), "123456789");
  EXPECT_EQ(le32(r, 21), 0xc78ab0e5u);
}

TEST(EventFileWriter, WritesFileVersionThenScalars) {
  const std::string dir = temp_dir("writer") + "/nested/run";
  std::string path;
  {
    EventFileWriter w(dir, 1000);
    path = w.path();
    EXPECT_EQ(std::filesystem::path(path).parent_path(), std::filesystem::path(dir));
    EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
    w.add_scalar("lm loss", 2.5, 10);
  }  // closed: everything on disk
  std::ifstream in(path, std::ios::binary);
  const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string ev = scalar_event(0, 10, "lm loss", 2.5f);  // as written, less the 9-byte wall_time
  EXPECT_EQ(got.size(), (12 + 9 + 15 + 4) + (12 + ev.size() + 9 + 4));  // each with its 9-byte wall_time
  EXPECT_NE(got.find("brain.Event:2"), std::string::npos);
  EXPECT_EQ(got.substr(got.size() - 4 - ev.size(), ev.size()), ev);  // wall_time comes first, the rest is equal
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path().parent_path());
}

TEST(EventFileWriter, UnwritableDirectoryIsAUserError) {
  const std::string base = temp_dir("blocked");
  std::filesystem::create_directories(base);
  std::ofstream(base + "/file") << "x";
  EXPECT_THROW(EventFileWriter(base + "/file"), UserError);       // a file, not a directory
  EXPECT_THROW(EventFileWriter(base + "/file/sub"), UserError);   // under a file
  std::filesystem::remove_all(base);
}
