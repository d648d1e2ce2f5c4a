#include "checkpoint/checkpoint_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "checkpoint/checkpoint_internal.h"
#include "core/crc32c.h"
#include "core/error.h"

namespace mt {

using namespace ckpt_detail;

namespace {

const std::string kCrcPlaceholder = "00000000";  // crc32c_hex's width

std::map<std::string, std::string> shard_metadata(const nlohmann::json& meta) {
  return {{kShardMetadataKey, meta.dump()}};
}

// n bytes of `file` from `begin` into dst (pread: the pages do not stay mapped in this process).
void read_range(const std::string& file, uint64_t begin, uint64_t n, uint8_t* dst, const std::string& tensor,
                const std::string& key) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) MT_USER_ERROR("cannot open {}: {}", file, std::strerror(errno));
  uint64_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, dst + got, size_t(std::min<uint64_t>(n - got, uint64_t(1) << 30)), off_t(begin + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += uint64_t(r);
  }
  ::close(fd);
  if (got != n)
    MT_USER_ERROR("{}: tensor \"{}\" (piece \"{}\"): truncated: {} of {} bytes read", file, tensor, key, got, n);
}

}  // namespace

CheckpointStreamWriter::CheckpointStreamWriter(std::string dir, int64_t iteration, std::vector<SafetensorsSpec> specs,
                                               const nlohmann::json& common, const CheckpointLayout& layout)
    : dir_(std::move(dir)), iteration_(iteration), layout_(layout), specs_(std::move(specs)) {
  // The shard's index of its pieces, as write_rank_files makes it: each tensor one whole piece.
  nlohmann::json pieces = nlohmann::json::object();
  for (const SafetensorsSpec& s : specs_)
    pieces[s.name] = {{"name", s.name},
                      {"global_shape", s.shape},
                      {"global_offset", Shape(s.shape.size(), 0)},
                      {"local_shape", s.shape},
                      {"crc32c", kCrcPlaceholder}};
  shard_meta_ = {{"format_version", kCheckpointFormatVersion},
                 {"iteration", iteration},
                 {"rank", 0},
                 {"world_size", 1},
                 {"pieces", std::move(pieces)}};
  begin_iteration(dir_, iteration_);
  const std::string iter_dir = join(dir_, iteration_dir_name(iteration_));
  write_text_atomic(join(iter_dir, kCommonFile), common.dump(1) + "\n");
  shard_ = std::make_unique<SafetensorsWriter>(join(iter_dir, shard_file_name(0, 1)), specs_,
                                               shard_metadata(shard_meta_), /*background=*/true);
}

CheckpointStreamWriter::~CheckpointStreamWriter() = default;

const std::vector<size_t>& CheckpointStreamWriter::order() const { return shard_->data_order(); }

void CheckpointStreamWriter::write(const Tensor& t) {
  MT_CHECK(written_ < specs_.size(), "more tensors than declared");
  const SafetensorsSpec& s = specs_[order()[written_]];
  Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
  shard_meta_["pieces"][s.name]["crc32c"] = crc32c_hex(crc32c(host.raw(), host.nbytes()));
  shard_->write(host);
  ++written_;
}

uint64_t CheckpointStreamWriter::finish() {
  shard_->rewrite_metadata(shard_metadata(shard_meta_));
  shard_->finish();
  SaveOptions opt;
  opt.layout = layout_;
  return finish_iteration(dir_, iteration_, opt);
}

Tensor read_checkpoint_tensor(const CheckpointReader& reader, const std::string& name, int64_t rows) {
  auto it = reader.tensors().find(name);
  if (it == reader.tensors().end())
    MT_USER_ERROR("{}: the checkpoint has no tensor \"{}\"", reader.path(), name);
  const CheckpointReader::TensorInfo& ti = it->second;
  Shape shape = ti.global_shape;
  if (rows >= 0) {
    if (shape.empty() || shape[0] < rows)
      MT_USER_ERROR("{}: tensor \"{}\" is {}, fewer than {} rows", reader.path(), name, shape_str(shape), rows);
    shape[0] = rows;
  }
  Tensor out = Tensor::empty(shape, ti.dtype);
  const PieceBox want{Shape(shape.size(), 0), shape, 0, shape_numel(shape)};
  int64_t filled = 0;
  std::vector<uint8_t> buf;
  for (const CheckpointReader::Piece& p : ti.pieces) {
    if (overlap_numel(p.box, want) == 0) continue;
    const std::string file = join(reader.path(), reader.files()[size_t(p.file)].name);
    // A piece that is exactly the tensor (a single-rank save) is read in place, else through a buffer.
    const bool exact = p.box.shape == shape && p.box.flat_begin == 0 && p.box.flat_end == shape_numel(shape) &&
                       p.end - p.begin == out.nbytes();
    uint8_t* dst = exact ? static_cast<uint8_t*>(out.raw()) : (buf.resize(p.end - p.begin), buf.data());
    read_range(file, p.begin, p.end - p.begin, dst, name, p.key);
    if (crc32c(dst, p.end - p.begin) != p.crc)
      MT_USER_ERROR("{}: tensor \"{}\" (piece \"{}\"): checksum mismatch: the file is corrupt", file, name, p.key);
    filled += exact ? shape_numel(shape) : copy_overlap(p.box, dst, ti.dtype, want, out.raw(), ti.dtype);
  }
  if (filled != shape_numel(shape))
    MT_USER_ERROR("{}: tensor \"{}\": the checkpoint's pieces hold {} of its {} elements", reader.path(), name, filled,
                  shape_numel(shape));
  return out;
}

void prefetch_checkpoint_tensor(const CheckpointReader& reader, const std::string& name) {
  auto it = reader.tensors().find(name);
  if (it == reader.tensors().end()) return;
  for (const CheckpointReader::Piece& p : it->second.pieces) {
    const std::string file = join(reader.path(), reader.files()[size_t(p.file)].name);
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;  // read_checkpoint_tensor will say why
    ::posix_fadvise(fd, off_t(p.begin), off_t(p.end - p.begin), POSIX_FADV_WILLNEED);
    ::close(fd);
  }
}

}  // namespace mt
