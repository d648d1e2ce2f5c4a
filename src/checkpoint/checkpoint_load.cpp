// Loading: find the newest complete iteration, read its index, and assemble each requested box
// from the stored pieces that overlap it, checking every checksum on the way.
#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_internal.h"
#include "core/crc32c.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/json_depth.h"

namespace fs = std::filesystem;

namespace mt {
namespace ckpt_detail {

std::vector<std::pair<int64_t, bool>> list_iterations(const std::string& dir) {
  std::vector<std::pair<int64_t, bool>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 6 || name.rfind("iter_", 0) != 0 || !e.is_directory(ec)) continue;
    int64_t it = -1;
    const char* b = name.data() + 5;
    const char* end = name.data() + name.size();
    auto r = std::from_chars(b, end, it);
    if (r.ec != std::errc() || r.ptr != end || it < 0) continue;
    out.emplace_back(it, fs::exists(e.path() / kMetadataFile, ec));
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t read_tracker(const std::string& dir) {
  const std::string path = tracker_path(dir);
  std::error_code ec;
  if (!fs::exists(path, ec)) return -1;
  std::string s = read_regular_file(path, "", 4096);
  while (!s.empty() && std::isspace(uint8_t(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(uint8_t(s[i]))) ++i;
  s = s.substr(i);
  if (s == "release")
    MT_USER_ERROR("{}: names a \"release\" checkpoint, which megatron.cpp does not read (convert it first)", path);
  int64_t it = -1;
  auto r = std::from_chars(s.data(), s.data() + s.size(), it);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size() || it < 0)
    MT_USER_ERROR("{}: expected an iteration number, found \"{}\"", path, s.substr(0, 40));
  return it;
}

}  // namespace ckpt_detail

using namespace ckpt_detail;

int64_t find_latest_checkpoint(const std::string& dir, std::FILE* warn) {
  const auto its = list_iterations(dir);
  const int64_t tracked = read_tracker(dir);
  int64_t newest_complete = -1;
  for (auto [it, complete] : its)
    if (complete) newest_complete = std::max(newest_complete, it);
  // The tracker wins when there is one (a run resumed from an older iteration may have left
  // newer ones behind); without it, the newest complete iteration.
  const int64_t chosen = tracked >= 0 ? tracked : newest_complete;
  for (auto [it, complete] : its) {
    if (it <= chosen || !warn) continue;
    if (!complete)
      fmt::print(warn, "WARNING: skipping incomplete checkpoint {} (no {}: its save did not finish)\n",
                 join(dir, iteration_dir_name(it)), kMetadataFile);
    else
      fmt::print(warn, "WARNING: ignoring checkpoint {}: {} names iteration {} (the save was interrupted before "
                 "the tracker was updated, or training was resumed from an older iteration)\n",
                 join(dir, iteration_dir_name(it)), tracker_path(dir), tracked);
  }
  if (chosen < 0) return -1;
  if (tracked >= 0) {
    const std::string meta = join(join(dir, iteration_dir_name(tracked)), kMetadataFile);
    std::error_code ec;
    if (!fs::exists(meta, ec)) {
      int64_t older = -1;
      for (auto [it, complete] : its)
        if (complete && it < tracked) older = it;
      MT_USER_ERROR("{}: missing, but {} names iteration {}: the checkpoint is damaged{}", meta, tracker_path(dir),
                    tracked,
                    older >= 0 ? fmt::format(" ({} is the newest complete one before it; load it by its iteration)",
                                             iteration_dir_name(older))
                               : std::string());
    }
  } else if (warn) {
    fmt::print(warn, "WARNING: {} is missing; loading the newest complete checkpoint, {}\n", tracker_path(dir),
               iteration_dir_name(chosen));
  }
  return chosen;
}

struct CheckpointReader::Cache {
  std::mutex mu;
  std::vector<std::unique_ptr<MappedFile>> files;
  std::vector<std::unique_ptr<std::once_flag>> once;
  std::set<std::pair<int, std::string>> verified;
};

namespace {

uint32_t parse_crc(const nlohmann::json& j) {
  const std::string s = j.get<std::string>();
  uint32_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (s.size() != 8 || r.ec != std::errc() || r.ptr != s.data() + s.size())
    throw std::invalid_argument("bad crc32c \"" + s + "\"");
  return v;
}

// DIR/NAME for a NAME read from metadata.json: a plain file name (no '/', not "." or ".."), and not
// a symbolic link leading out of DIR. invalid_argument otherwise (the index is malformed).
std::string confined_path(const std::string& dir, const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    throw std::invalid_argument("file name \"" + name.substr(0, 80) + "\" is not a plain file name in the checkpoint");
  const std::string path = join(dir, name);
  std::error_code ec;
  if (fs::is_symlink(path, ec)) {
    const fs::path target = fs::weakly_canonical(path, ec), base = fs::weakly_canonical(dir, ec);
    if (ec || target.parent_path() != base)
      throw std::invalid_argument("file " + name + " is a symbolic link out of the checkpoint directory");
  }
  return path;
}

std::string read_small_file(const std::string& path) {
  MappedFile f(path);
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

}  // namespace

CheckpointReader::CheckpointReader(const std::string& dir, int64_t iteration, std::FILE* warn)
    : cache_(std::make_unique<Cache>()) {
  std::error_code ec;
  if (iteration < 0 && fs::exists(join(dir, kMetadataFile), ec)) {
    path_ = dir;  // an iteration directory itself
  } else {
    if (!fs::is_directory(dir, ec)) MT_USER_ERROR("{}: no such checkpoint directory", dir);
    int64_t it = iteration >= 0 ? iteration : find_latest_checkpoint(dir, warn);
    if (it < 0)
      MT_USER_ERROR("{}: no checkpoint found (neither {} nor a complete iter_* directory)", dir, kTrackerFile);
    path_ = join(dir, iteration_dir_name(it));
    if (!fs::is_directory(path_, ec)) MT_USER_ERROR("{}: no such checkpoint iteration directory", path_);
  }
  const std::string meta_path = join(path_, kMetadataFile);
  if (!fs::exists(meta_path, ec))
    MT_USER_ERROR("{}: missing: the checkpoint is incomplete (its save did not finish) or damaged", meta_path);
  try {
    const std::string text = read_small_file(meta_path);
    check_json_depth(text, meta_path);
    meta_ = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    MT_USER_ERROR("{}: not valid JSON ({})", meta_path, e.what());
  }
  try {
    const int version = meta_.at("format_version").get<int>();
    if (version > kCheckpointFormatVersion)
      MT_USER_ERROR("{}: format version {} is newer than this megatron.cpp reads ({})", meta_path, version,
                    kCheckpointFormatVersion);
    iteration_ = meta_.at("iteration").get<int64_t>();
    const auto& l = meta_.at("layout");
    layout_ = CheckpointLayout{l.at("tp").get<int>(), l.at("pp").get<int>(), l.at("dp").get<int>(),
                             l.at("cp").get<int>(), l.at("ep").get<int>(), l.at("distributed_optimizer").get<bool>()};
    for (const auto& f : meta_.at("files")) {
      FileInfo fi;
      fi.name = f.at("name").get<std::string>();
      confined_path(path_, fi.name);
      fi.rank = f.at("rank").get<int>();
      fi.bytes = f.at("bytes").get<uint64_t>();
      fi.header_bytes = f.at("header_bytes").get<uint64_t>();
      fi.header_crc = parse_crc(f.at("header_crc32c"));
      files_.push_back(std::move(fi));
    }
    for (const auto& [name, t] : meta_.at("tensors").items()) {
      TensorInfo ti;
      ti.name = name;
      if (!safetensors_dtype(t.at("dtype").get<std::string>(), ti.dtype))
        throw std::invalid_argument("tensor " + name + ": unknown dtype");
      ti.global_shape = t.at("global_shape").get<Shape>();
      for (const auto& p : t.at("pieces")) {
        Piece pc;
        pc.file = p.at("file").get<int>();
        if (pc.file < 0 || size_t(pc.file) >= files_.size()) throw std::invalid_argument("piece file out of range");
        pc.key = p.at("key").get<std::string>();
        pc.box.offset = p.at("global_offset").get<Shape>();
        pc.box.shape = p.at("local_shape").get<Shape>();
        pc.box.flat_begin = 0;
        pc.box.flat_end = shape_numel(pc.box.shape);
        if (p.contains("flat_range")) {
          pc.box.flat_begin = p["flat_range"].at(0).get<int64_t>();
          pc.box.flat_end = p["flat_range"].at(1).get<int64_t>();
        }
        pc.begin = p.at("byte_range").at(0).get<uint64_t>();
        pc.end = p.at("byte_range").at(1).get<uint64_t>();
        pc.crc = parse_crc(p.at("crc32c"));
        const size_t n = ti.global_shape.size();
        bool ok = pc.box.offset.size() == n && pc.box.shape.size() == n && pc.box.flat_begin >= 0 &&
                  pc.box.flat_begin <= pc.box.flat_end && pc.box.flat_end <= shape_numel(pc.box.shape) &&
                  pc.begin <= pc.end && pc.end <= files_[size_t(pc.file)].bytes &&
                  pc.end - pc.begin == uint64_t(pc.box.flat_end - pc.box.flat_begin) * dtype_size(ti.dtype);
        for (size_t d = 0; ok && d < n; ++d)
          ok = pc.box.offset[d] >= 0 && pc.box.shape[d] >= 0 &&
               pc.box.offset[d] + pc.box.shape[d] <= ti.global_shape[d];
        if (!ok) throw std::invalid_argument("tensor " + name + ": piece " + pc.key + " is inconsistent");
        ti.pieces.push_back(std::move(pc));
      }
      tensors_.emplace(name, std::move(ti));
    }
    // common.json, checked against the index.
    const auto& c = meta_.at("common");
    const std::string common_path = confined_path(path_, c.at("name").get<std::string>());
    const std::string text = read_small_file(common_path);
    if (text.size() != c.at("bytes").get<uint64_t>() || crc32c(text.data(), text.size()) != parse_crc(c.at("crc32c")))
      MT_USER_ERROR("{}: checksum mismatch: the file is corrupt or was changed after the save", common_path);
    check_json_depth(text, common_path);
    try {
      common_ = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      MT_USER_ERROR("{}: not valid JSON ({})", common_path, e.what());
    }
  } catch (const nlohmann::json::exception& e) {
    MT_USER_ERROR("{}: malformed checkpoint index ({})", meta_path, e.what());
  } catch (const std::invalid_argument& e) {
    MT_USER_ERROR("{}: malformed checkpoint index ({})", meta_path, e.what());
  }
  cache_->files.resize(files_.size());
  for (size_t i = 0; i < files_.size(); ++i) cache_->once.push_back(std::make_unique<std::once_flag>());
}

CheckpointReader::~CheckpointReader() = default;

const MappedFile& CheckpointReader::file(int i) const {
  std::call_once(*cache_->once[size_t(i)], [&] {
    const FileInfo& fi = files_[size_t(i)];
    const std::string path = join(path_, fi.name);
    auto f = std::make_unique<MappedFile>(path);
    if (f->size() != fi.bytes)
      MT_USER_ERROR("{}: {}: {} bytes, but {} records {}", path, f->size() < fi.bytes ? "truncated" : "wrong size",
                    f->size(), kMetadataFile, fi.bytes);
    if (fi.header_bytes > f->size() || crc32c(f->data(), fi.header_bytes) != fi.header_crc)
      MT_USER_ERROR("{}: header checksum mismatch: the file is corrupt", path);
    std::lock_guard<std::mutex> lock(cache_->mu);
    cache_->files[size_t(i)] = std::move(f);
  });
  std::lock_guard<std::mutex> lock(cache_->mu);
  return *cache_->files[size_t(i)];
}

void CheckpointReader::verify_piece(const TensorInfo& t, const Piece& p) const {
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->verified.count({p.file, p.key})) return;
  }
  const MappedFile& f = file(p.file);
  const uint32_t crc = crc32c(f.data() + p.begin, p.end - p.begin);
  if (crc != p.crc)
    MT_USER_ERROR("{}: tensor \"{}\" (piece \"{}\"): checksum mismatch (crc32c {} != {} recorded): the file is "
                  "corrupt",
                  join(path_, files_[size_t(p.file)].name), t.name, p.key, crc32c_hex(crc), crc32c_hex(p.crc));
  std::lock_guard<std::mutex> lock(cache_->mu);
  cache_->verified.insert({p.file, p.key});
}

uint64_t CheckpointReader::load(const std::vector<ShardedTensor>& requests, int threads) const {
  const std::string meta_path = join(path_, kMetadataFile);
  std::vector<ShardedTensor> reqs;
  std::vector<const TensorInfo*> infos;
  for (const ShardedTensor& r : requests) {
    ShardedTensor q = normalized(r, "loading");
    auto it = tensors_.find(q.name);
    if (it == tensors_.end()) {
      if (q.allow_missing) continue;
      MT_USER_ERROR("{}: the checkpoint has no tensor \"{}\" (saved from a different model or without this state?)",
                    meta_path, q.name);
    }
    const TensorInfo& ti = it->second;
    // A checkpoint that stored vocabulary padding holds more rows than the request: the request's
    // box (within the real rows) addresses the same global elements.
    bool extra_rows_ok = q.allow_extra_rows && !q.global_shape.empty() &&
                         ti.global_shape.size() == q.global_shape.size() && ti.global_shape[0] >= q.global_shape[0];
    for (size_t d = 1; extra_rows_ok && d < q.global_shape.size(); ++d)
      extra_rows_ok = ti.global_shape[d] == q.global_shape[d];
    if (ti.global_shape != q.global_shape && !extra_rows_ok)
      MT_USER_ERROR("{}: tensor \"{}\" is {} in the checkpoint but {} in the model: mismatched architecture", meta_path,
                    q.name, shape_str(ti.global_shape), shape_str(q.global_shape));
    auto floating = [](DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; };
    if (ti.dtype != q.data.dtype() && !(floating(ti.dtype) && floating(q.data.dtype())))
      MT_USER_ERROR("{}: tensor \"{}\" is {} in the checkpoint but {} in the model", meta_path, q.name,
                    dtype_name(ti.dtype), dtype_name(q.data.dtype()));
    reqs.push_back(std::move(q));
    infos.push_back(&ti);
  }
  std::mutex read_mu;
  std::set<const Piece*> read;  // each piece read counts once
  parallel_for(int64_t(reqs.size()), threads > 0 ? threads : default_threads(), [&](int64_t i) {
    const ShardedTensor& q = reqs[size_t(i)];
    const TensorInfo& ti = *infos[size_t(i)];
    const PieceBox want = box_of(q);
    Tensor dst = q.data.device().is_cpu() ? q.data : Tensor::empty(q.data.shape(), q.data.dtype());
    int64_t filled = 0;
    for (const Piece& p : ti.pieces) {
      if (overlap_numel(p.box, want) == 0) continue;
      verify_piece(ti, p);
      {
        std::lock_guard<std::mutex> lock(read_mu);
        read.insert(&p);
      }
      filled += copy_overlap(p.box, file(p.file).data() + p.begin, ti.dtype, want, dst.raw(), q.data.dtype());
    }
    if (filled != piece_numel(q))
      MT_USER_ERROR("{}: tensor \"{}\": the checkpoint's pieces hold {} of the {} elements asked for (box at {} of {})",
                    meta_path, q.name, filled, piece_numel(q), shape_str(q.global_offset), shape_str(q.local_shape));
    if (!q.data.device().is_cpu()) q.data.copy_from(dst);
  });
  uint64_t bytes = 0;
  for (const Piece* p : read) bytes += p->end - p->begin;
  return bytes;
}

void CheckpointReader::verify_all() const {
  std::vector<std::pair<const TensorInfo*, const Piece*>> all;
  for (const auto& [name, t] : tensors_) {
    // Our writer stores every element of a tensor exactly once (replica 0 only), so the pieces'
    // sizes add up to the tensor's; anything else would fail a load that asks for the gap.
    int64_t stored = 0;
    for (const Piece& p : t.pieces) stored += p.box.flat_end - p.box.flat_begin;
    if (stored != shape_numel(t.global_shape))
      MT_USER_ERROR("{}/{}: tensor {} has {} elements in its pieces, but its shape {} holds {}", path_, kMetadataFile,
                    name, stored, shape_str(t.global_shape), shape_numel(t.global_shape));
    for (const Piece& p : t.pieces) all.emplace_back(&t, &p);
  }
  for (size_t i = 0; i < files_.size(); ++i) file(int(i));
  parallel_for(int64_t(all.size()), default_threads(), [&](int64_t i) { verify_piece(*all[size_t(i)].first, *all[size_t(i)].second); });
}

nlohmann::json load_checkpoint(const std::string& dir, const std::vector<ShardedTensor>& requests, int64_t* iteration) {
  const int64_t it = find_latest_checkpoint(dir);
  if (iteration) *iteration = it;
  if (it < 0) return nlohmann::json();
  CheckpointReader r(dir, it, nullptr);
  r.load(requests);
  return r.common();
}

void check_args_match(const nlohmann::json& saved, const nlohmann::json& current, const std::vector<std::string>& keys,
                      const std::string& checkpoint_path) {
  std::string diffs;
  for (const std::string& k : keys) {
    if (!saved.is_object() || !current.is_object() || !saved.contains(k) || !current.contains(k)) continue;
    if (saved[k] == current[k]) continue;
    std::string flag = k;
    std::replace(flag.begin(), flag.end(), '_', '-');
    diffs += fmt::format("{}--{}: checkpoint {}, now {}", diffs.empty() ? "" : "; ", flag, saved[k].dump(),
                         current[k].dump());
  }
  if (!diffs.empty())
    MT_USER_ERROR("{}: the checkpoint was saved with different model arguments: {}", checkpoint_path, diffs);
}

}  // namespace mt
