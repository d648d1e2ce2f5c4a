#include "train/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/crc32c.h"
#include "core/error.h"

namespace mt {
namespace pb {

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(uint8_t(v)));
}

void put_key(std::string& out, int field, int wire_type) { put_varint(out, (uint64_t(field) << 3) | uint64_t(wire_type)); }

void put_int64(std::string& out, int field, int64_t v) {
  if (v == 0) return;
  put_key(out, field, 0);
  put_varint(out, uint64_t(v));  // negative int64: ten bytes, two's complement (protobuf's rule)
}

namespace {
template <class T>
void put_fixed(std::string& out, T v) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the host is little-endian (x86-64, aarch64), as the wire is
  out.append(reinterpret_cast<const char*>(b), sizeof(T));
}
}  // namespace

void put_double(std::string& out, int field, double v) {
  if (v == 0 && !std::signbit(v)) return;
  put_key(out, field, 1);
  put_fixed(out, v);
}

// A scalar's value is written even when 0 (it sits in a oneof, where presence counts).
void put_float(std::string& out, int field, float v) {
  put_key(out, field, 5);
  put_fixed(out, v);
}

void put_bytes(std::string& out, int field, std::string_view v) {
  put_key(out, field, 2);
  put_varint(out, v.size());
  out.append(v);
}

}  // namespace pb

std::string scalar_event(double wall_time, int64_t step, std::string_view tag, float value) {
  std::string v;  // Summary.Value
  pb::put_bytes(v, 1, tag);
  pb::put_float(v, 2, value);
  std::string summary;
  pb::put_bytes(summary, 1, v);
  std::string e;
  pb::put_double(e, 1, wall_time);
  pb::put_int64(e, 2, step);
  pb::put_bytes(e, 5, summary);
  return e;
}

std::string file_version_event(double wall_time, std::string_view version) {
  std::string e;
  pb::put_double(e, 1, wall_time);
  pb::put_bytes(e, 3, version);
  return e;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t c = crc32c(data.data(), data.size());
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view data) {
  std::string r;
  const uint64_t n = data.size();
  pb::put_fixed(r, n);
  pb::put_fixed(r, masked_crc32c(std::string_view(r.data(), 8)));
  r.append(data);
  pb::put_fixed(r, masked_crc32c(data));
  return r;
}

double unix_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

EventFileWriter::EventFileWriter(const std::string& dir, int64_t flush_every) : flush_every_(flush_every) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    if (!ec) ec = std::make_error_code(std::errc::not_a_directory);
    MT_USER_ERROR("{}: cannot create the directory ({})", dir, ec.message());
  }
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  const double now = unix_time_now();
  path_ = (fs::path(dir) / fmt::format("events.out.tfevents.{:010d}.{}.{}.0", int64_t(now), host, getpid())).string();
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) MT_USER_ERROR("{}: cannot write an event file there ({})", dir, std::strerror(errno));
  write(file_version_event(now));
  flush();
}

EventFileWriter::~EventFileWriter() { close(); }

void EventFileWriter::write(const std::string& event) {
  if (!f_) return;
  const std::string r = tfrecord(event);
  std::fwrite(r.data(), 1, r.size(), f_);
  if (++pending_ >= flush_every_) flush();
}

void EventFileWriter::add_scalar(std::string_view tag, double value, int64_t step) {
  write(scalar_event(unix_time_now(), step, tag, float(value)));
}

void EventFileWriter::flush() {
  if (f_) std::fflush(f_);
  pending_ = 0;
}

void EventFileWriter::close() {
  if (!f_) return;
  std::fclose(f_);
  f_ = nullptr;
}

}  // namespace mt
