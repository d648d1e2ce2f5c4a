#pragma once
// TensorBoard event files, written without TensorFlow or libprotobuf: the few fields of the
// `Event` and `Summary` protobufs a scalar needs, encoded by hand, in TFRecord framing.
//
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   TFRecord: uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data),
//   little-endian; masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8.
//
// A file is `events.out.tfevents.<10-digit unix time>.<host>.<pid>.0` and starts with a
// file_version event ("brain.Event:2"), as TensorBoard's own writers do, so `tensorboard --logdir`
// and its EventAccumulator read it like any other run.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace mt {

// Protobuf wire format: just what Event and Summary need (fields with proto3 default values
// are left out, as protobuf's own serializer does).
namespace pb {
void put_varint(std::string& out, uint64_t v);
void put_key(std::string& out, int field, int wire_type);  // wire types: 0 varint, 1 fixed64, 2 bytes, 5 fixed32
void put_int64(std::string& out, int field, int64_t v);
void put_double(std::string& out, int field, double v);
void put_float(std::string& out, int field, float v);
void put_bytes(std::string& out, int field, std::string_view v);  // strings and embedded messages
}  // namespace pb

// The serialized Event of one scalar (Summary.Value with tag and simple_value).
std::string scalar_event(double wall_time, int64_t step, std::string_view tag, float value);
// The serialized Event that opens every file.
std::string file_version_event(double wall_time, std::string_view version = "brain.Event:2");
uint32_t masked_crc32c(std::string_view data);
// `data` framed as one TFRecord.
std::string tfrecord(std::string_view data);

// One event file in `dir` (created with its parents). Scalars are written as they come and
// flushed every `flush_every` events (Megatron's --tensorboard-queue-size), on flush() and on
// close(); a crash loses at most those, and what was flushed stays readable.
class EventFileWriter {
 public:
  // Throws UserError (naming `dir` and why) when the directory or the file cannot be made.
  explicit EventFileWriter(const std::string& dir, int64_t flush_every = 1000);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void add_scalar(std::string_view tag, double value, int64_t step);
  void flush();
  void close();
  const std::string& path() const { return path_; }

 private:
  void write(const std::string& event);
  std::string path_;
  std::FILE* f_ = nullptr;
  int64_t flush_every_, pending_ = 0;
};

// Seconds since the Unix epoch (an Event's wall_time).
double unix_time_now();

}  // namespace mt
