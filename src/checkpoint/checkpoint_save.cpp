// Saving: every rank writes its shard file (temporary name, fsync, rename); after a barrier
// rank 0 indexes them into metadata.json, then updates the tracker, then prunes old iterations.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_internal.h"
#include "core/crc32c.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"

#if defined(MT_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace fs = std::filesystem;

namespace mt {
namespace ckpt_detail {

std::string shard_file_name(int rank, int world_size) {
  return fmt::format("shard_{:05d}_of_{:05d}.safetensors", rank, world_size);
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

int default_threads() {
  unsigned h = std::thread::hardware_concurrency();
  return int(std::clamp(h, 1u, 8u));
}

void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  threads = int(std::min<int64_t>(std::max(threads, 1), n));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&] {
    for (int64_t i; !failed && (i = next++) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_text_atomic(const std::string& path, const std::string& text) {
  AtomicFileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

}  // namespace ckpt_detail

using namespace ckpt_detail;

std::string iteration_dir_name(int64_t iteration) { return fmt::format("iter_{:07d}", iteration); }
std::string tracker_path(const std::string& dir) { return join(dir, kTrackerFile); }

namespace {

void emit(const SaveOptions& opt, const std::string& event) {
  if (opt.on_event) opt.on_event(event);
}

void barrier(const SaveOptions& opt) {
  if (opt.world_size > 1) {
    MT_CHECK(bool(opt.barrier), "save_checkpoint with {} ranks needs a barrier", opt.world_size);
    opt.barrier();
  } else if (opt.barrier) {
    opt.barrier();
  }
}

void remove_iteration(const std::string& iter_dir) {
  // metadata.json first: from then on the directory reads as incomplete, never as half-deleted.
  std::error_code ec;
  if (fs::remove(join(iter_dir, kMetadataFile), ec)) fsync_dir(iter_dir);
  fs::remove_all(iter_dir, ec);
}

// Rank 0, before anyone writes: the iteration directory exists and is empty. A complete
// checkpoint of the same iteration being replaced first stops being current (the tracker falls
// back to the newest other complete one), so a crash now cannot leave the tracker naming a
// half-rewritten directory.
void prepare_iteration_dir(const std::string& dir, int64_t iteration) {
  const std::string iter_dir = join(dir, iteration_dir_name(iteration));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) MT_USER_ERROR("cannot create checkpoint directory {}: {}", dir, ec.message());
  if (fs::exists(join(iter_dir, kMetadataFile)) && read_tracker(dir) == iteration) {
    int64_t prev = -1;
    for (auto [it, complete] : list_iterations(dir))
      if (complete && it < iteration) prev = std::max(prev, it);
    if (prev >= 0) write_text_atomic(tracker_path(dir), std::to_string(prev));
    else fs::remove(tracker_path(dir), ec);
    fsync_dir(dir);
  }
  if (fs::exists(iter_dir)) remove_iteration(iter_dir);
  fs::create_directories(iter_dir, ec);
  if (ec) MT_USER_ERROR("cannot create checkpoint directory {}: {}", iter_dir, ec.message());
  fsync_dir(dir);
}

// This rank's pieces, checked, with replicas and empty pieces dropped.
std::vector<ShardedTensor> pieces_to_write(const std::vector<ShardedTensor>& shards) {
  std::vector<ShardedTensor> out;
  for (const ShardedTensor& s : shards) {
    ShardedTensor t = normalized(s, "saving");
    if (t.replica_id == 0 && piece_numel(t) > 0) out.push_back(std::move(t));
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The test-only slowed writer (kTestWriteDelayEnv).
void test_write_delay() {
  const char* v = std::getenv(kTestWriteDelayEnv);
  const long ms = v ? std::strtol(v, nullptr, 10) : 0;
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// Writes this rank's shard file (pieces on the host) and, on rank 0, common.json; returns the
// shard file's size.
uint64_t write_rank_files(const std::string& dir, int64_t iteration, const std::vector<ShardedTensor>& pieces,
                          const std::string& common_text, const SaveOptions& opt) {
  const std::string iter_dir = join(dir, iteration_dir_name(iteration));
  emit(opt, fmt::format("begin {}", opt.rank));
  test_write_delay();
  std::vector<uint32_t> crcs(pieces.size());
  parallel_for(int64_t(pieces.size()), default_threads(), [&](int64_t i) {
    const Tensor& d = pieces[size_t(i)].data;
    crcs[size_t(i)] = crc32c(d.raw(), d.nbytes());
  });
  nlohmann::json index = nlohmann::json::object();
  std::vector<std::pair<std::string, Tensor>> named;
  std::map<std::string, int> count;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const ShardedTensor& t = pieces[i];
    int k = count[t.name]++;
    std::string key = k == 0 ? t.name : fmt::format("{}#{}", t.name, k);
    nlohmann::json p = {{"name", t.name},
                        {"global_shape", t.global_shape},
                        {"global_offset", t.global_offset},
                        {"local_shape", t.local_shape},
                        {"crc32c", crc32c_hex(crcs[i])}};
    const bool whole = t.flat_begin == 0 && t.flat_end == shape_numel(t.local_shape);
    if (!whole) p["flat_range"] = {t.flat_begin, t.flat_end};
    index[key] = std::move(p);
    named.emplace_back(key, whole ? t.data.view(t.local_shape) : t.data.view({piece_numel(t)}));
  }
  nlohmann::json meta = {{"format_version", kCheckpointFormatVersion},
                         {"iteration", iteration},
                         {"rank", opt.rank},
                         {"world_size", opt.world_size},
                         {"pieces", std::move(index)}};
  const std::string path = join(iter_dir, shard_file_name(opt.rank, opt.world_size));
  write_safetensors(path, named, {{kShardMetadataKey, meta.dump()}});
  if (opt.rank == 0) write_text_atomic(join(iter_dir, kCommonFile), common_text);
  emit(opt, fmt::format("shard {}", opt.rank));
  return fs::file_size(path);
}

// The global flat intervals [begin, end) a piece covers (for the coverage check): the box row
// by row along its last dimension, clipped to its flat range, adjacent rows merged.
void piece_intervals(const Shape& global_shape, const PieceBox& box, std::vector<std::pair<int64_t, int64_t>>& out) {
  const size_t n = global_shape.size();
  if (n == 0) {
    if (box.flat_end > box.flat_begin) out.emplace_back(0, 1);
    return;
  }
  Shape gstr(n, 1);
  for (size_t d = n; d-- > 1;) gstr[d - 1] = gstr[d] * global_shape[d];
  const int64_t row = box.shape[n - 1];
  if (row == 0) return;
  const int64_t rows = shape_numel(box.shape) / row;
  const int64_t r0 = box.flat_begin / row, r1 = std::min(rows, (box.flat_end + row - 1) / row);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t g = box.offset[n - 1], rem = r;
    for (size_t d = n - 1; d-- > 0;) {
      g += (box.offset[d] + rem % box.shape[d]) * gstr[d];
      rem /= box.shape[d];
    }
    const int64_t a = std::max(box.flat_begin, r * row), b = std::min(box.flat_end, (r + 1) * row);
    if (a >= b) continue;
    const int64_t s = g + (a - r * row), e = g + (b - r * row);
    if (!out.empty() && out.back().second == s) out.back().second = e;
    else out.emplace_back(s, e);
  }
}

// Rank 0, after every shard is on disk: index the shard files into metadata.json, write it,
// then the tracker, then prune. Returns the bytes of every file of the checkpoint.
uint64_t complete_checkpoint(const std::string& dir, int64_t iteration, const SaveOptions& opt) {
  const std::string iter_dir = join(dir, iteration_dir_name(iteration));
  nlohmann::json files = nlohmann::json::array();
  struct Tensor_ {
    std::string dtype;
    Shape global_shape;
    nlohmann::json pieces = nlohmann::json::array();
    std::vector<std::pair<int64_t, int64_t>> intervals;
  };
  std::map<std::string, Tensor_> tensors;
  uint64_t total = 0;
  for (int r = 0; r < opt.world_size; ++r) {
    const std::string name = shard_file_name(r, opt.world_size), path = join(iter_dir, name);
    if (!fs::exists(path))
      MT_USER_ERROR("{}: missing: rank {} did not write its checkpoint shard (the checkpoint stays incomplete)", path, r);
    SafetensorsReader rd(path);
    MappedFile raw(path);
    uint64_t header_len;
    std::memcpy(&header_len, raw.data(), 8);
    const uint64_t header_bytes = 8 + header_len;
    files.push_back({{"name", name},
                     {"rank", r},
                     {"bytes", raw.size()},
                     {"header_bytes", header_bytes},
                     {"header_crc32c", crc32c_hex(crc32c(raw.data(), header_bytes))}});
    total += raw.size();
    auto it = rd.metadata().find(kShardMetadataKey);
    if (it == rd.metadata().end()) MT_USER_ERROR("{}: not a megatron.cpp checkpoint shard (no __metadata__)", path);
    nlohmann::json meta = nlohmann::json::parse(it->second);
    for (const auto& [key, p] : meta.at("pieces").items()) {
      const SafetensorsEntry& e = rd.entry(key);
      const std::string tname = p.at("name").get<std::string>();
      Tensor_& t = tensors[tname];
      Shape gs = p.at("global_shape").get<Shape>();
      if (t.pieces.empty()) {
        t.dtype = e.dtype;
        t.global_shape = gs;
      } else if (t.global_shape != gs || t.dtype != e.dtype) {
        MT_USER_ERROR("{}: tensor \"{}\" is {} {} here but {} {} in another shard (ranks disagree on the model)",
                      path, tname, e.dtype, shape_str(gs), t.dtype, shape_str(t.global_shape));
      }
      nlohmann::json q = {{"file", r},
                          {"key", key},
                          {"global_offset", p.at("global_offset")},
                          {"local_shape", p.at("local_shape")},
                          {"byte_range", {header_bytes + e.begin, header_bytes + e.end}},
                          {"crc32c", p.at("crc32c")}};
      PieceBox box{p.at("global_offset").get<Shape>(), p.at("local_shape").get<Shape>(), 0, 0};
      box.flat_end = shape_numel(box.shape);
      if (p.contains("flat_range")) {
        q["flat_range"] = p["flat_range"];
        box.flat_begin = p["flat_range"][0].get<int64_t>();
        box.flat_end = p["flat_range"][1].get<int64_t>();
      }
      piece_intervals(gs, box, t.intervals);
      t.pieces.push_back(std::move(q));
    }
  }
  nlohmann::json tjson = nlohmann::json::object();
  for (auto& [name, t] : tensors) {
    std::sort(t.intervals.begin(), t.intervals.end());
    int64_t covered = 0, end = 0;
    for (auto [a, b] : t.intervals) {
      if (a < end)
        MT_USER_ERROR("{}: tensor \"{}\": two pieces hold element {} (give duplicates a nonzero replica_id)",
                      iter_dir, name, a);
      covered += b - a;
      end = b;
    }
    const int64_t numel = shape_numel(t.global_shape);
    if (covered != numel)
      MT_USER_ERROR("{}: tensor \"{}\" {}: the ranks' pieces cover {} of its {} elements", iter_dir, name,
                    shape_str(t.global_shape), covered, numel);
    tjson[name] = {{"dtype", t.dtype}, {"global_shape", t.global_shape}, {"pieces", std::move(t.pieces)}};
  }
  MappedFile common(join(iter_dir, kCommonFile));
  const CheckpointLayout& l = opt.layout;
  nlohmann::json meta = {
      {"format", "megatron.cpp distributed checkpoint"},
      {"format_version", kCheckpointFormatVersion},
      {"iteration", iteration},
      {"world_size", opt.world_size},
      {"layout",
       {{"tp", l.tp}, {"pp", l.pp}, {"dp", l.dp}, {"cp", l.cp}, {"ep", l.ep},
        {"distributed_optimizer", l.distributed_optimizer}}},
      {"total_bytes", total},
      {"common", {{"name", kCommonFile}, {"bytes", common.size()}, {"crc32c", crc32c_hex(crc32c(common.data(), common.size()))}}},
      {"files", std::move(files)},
      {"tensors", std::move(tjson)}};
  const std::string meta_text = meta.dump(1) + "\n";
  write_text_atomic(join(iter_dir, kMetadataFile), meta_text);
  emit(opt, "metadata");
  write_text_atomic(tracker_path(dir), std::to_string(iteration));
  fsync_dir(dir);
  emit(opt, "tracker");

  if (opt.keep_last > 0) {
    auto its = list_iterations(dir);  // ascending
    int kept = 0;
    for (auto i = its.rbegin(); i != its.rend(); ++i) {
      auto [it, complete] = *i;
      if (it > iteration) continue;  // not ours to judge
      if (complete && kept < opt.keep_last) {
        ++kept;
        continue;
      }
      remove_iteration(join(dir, iteration_dir_name(it)));
      emit(opt, "deleted " + iteration_dir_name(it));
    }
    fsync_dir(dir);
  }
  return total + common.size() + meta_text.size();
}

}  // namespace

SaveStats save_checkpoint(const std::string& dir, int64_t iteration, const std::vector<ShardedTensor>& shards,
                          const nlohmann::json& common, const SaveOptions& opt) {
  MT_CHECK(opt.rank >= 0 && opt.rank < opt.world_size, "rank {} of {}", opt.rank, opt.world_size);
  const auto t0 = std::chrono::steady_clock::now();
  SaveStats stats;
  std::vector<ShardedTensor> pieces = pieces_to_write(shards);
  for (ShardedTensor& p : pieces)
    if (!p.data.device().is_cpu()) p.data = p.data.to(Device::cpu());
  if (opt.rank == 0) prepare_iteration_dir(dir, iteration);
  barrier(opt);
  stats.bytes = write_rank_files(dir, iteration, pieces, common.dump(1) + "\n", opt);
  stats.write_seconds = seconds_since(t0);
  barrier(opt);
  if (opt.rank == 0) stats.bytes = complete_checkpoint(dir, iteration, opt);
  barrier(opt);
  return stats;
}

// ---- asynchronous saving ---------------------------------------------------------------------

struct AsyncCheckpointSaver::HostBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  bool pinned = false;
  ~HostBuffer() { release(); }
  void release() {
#if defined(MT_WITH_CUDA)
    if (pinned && p) cudaFreeHost(p);
#endif
    if (!pinned) std::free(p);
    p = nullptr;
    bytes = 0;
    pinned = false;
  }
  void reserve(size_t n, bool want_pinned) {
    if (n <= bytes && want_pinned == pinned) return;
    release();
    n = (n + 4095) / 4096 * 4096;
#if defined(MT_WITH_CUDA)
    if (want_pinned && cudaHostAlloc(&p, n, cudaHostAllocDefault) == cudaSuccess) {
      pinned = true;
      bytes = n;
      return;
    }
    p = nullptr;
#endif
    p = std::aligned_alloc(4096, n);
    if (!p) MT_USER_ERROR("--async-save: cannot allocate {} bytes of host memory for the checkpoint snapshot", n);
    bytes = n;
  }
};

struct AsyncCheckpointSaver::Job {
  std::string dir;
  int64_t iteration = 0;
  SaveOptions opt;
  std::vector<ShardedTensor> pieces;  // host snapshot
  std::string common;
  std::thread thread;
  std::atomic<bool> done{false};
  std::exception_ptr error;
  std::chrono::steady_clock::time_point t0;
  SaveStats stats;  // snapshot_seconds on start; bytes and write_seconds by the writer
};

AsyncCheckpointSaver::AsyncCheckpointSaver() : buffer_(std::make_unique<HostBuffer>()) {}

AsyncCheckpointSaver::~AsyncCheckpointSaver() {
  if (preparing_.joinable()) preparing_.join();
  if (job_ && job_->thread.joinable()) job_->thread.join();
}

namespace {
// The snapshot's size (64-byte aligned pieces) and the device whose host memory should be pinned
// for it (-1: all pieces are on the host).
std::pair<size_t, int> snapshot_size(const std::vector<ShardedTensor>& pieces) {
  size_t total = 0;
  int device = -1;
  for (const ShardedTensor& p : pieces) {
    total += (p.data.nbytes() + 63) / 64 * 64;
    if (!p.data.device().is_cpu()) device = p.data.device().index;
  }
  return {std::max<size_t>(total, 64), device};
}
}  // namespace

void AsyncCheckpointSaver::prepare(const std::vector<ShardedTensor>& shards) {
  if (preparing_.joinable()) preparing_.join();
  const auto [bytes, device] = snapshot_size(pieces_to_write(shards));
  HostBuffer* buf = buffer_.get();
  preparing_ = std::thread([buf, bytes = bytes, device = device] {
#if defined(MT_WITH_CUDA)
    if (device >= 0) cudaSetDevice(device);
#endif
    buf->reserve(bytes, device >= 0);
  });
}

bool AsyncCheckpointSaver::in_flight() const { return job_ != nullptr; }
bool AsyncCheckpointSaver::writer_done() const { return !job_ || job_->done.load(); }

void AsyncCheckpointSaver::start(const std::string& dir, int64_t iteration, const std::vector<ShardedTensor>& shards,
                                 const nlohmann::json& common, const SaveOptions& opt) {
  MT_CHECK(opt.rank >= 0 && opt.rank < opt.world_size, "rank {} of {}", opt.rank, opt.world_size);
  finalize();
  auto job = std::make_unique<Job>();
  job->t0 = std::chrono::steady_clock::now();
  job->dir = dir;
  job->iteration = iteration;
  job->opt = opt;
  job->common = common.dump(1) + "\n";
  job->pieces = pieces_to_write(shards);
  // Snapshot into one host block: training may change the tensors as soon as we return.
  if (preparing_.joinable()) preparing_.join();
  const auto [total, device] = snapshot_size(job->pieces);
  buffer_->reserve(total, device >= 0);
  size_t off = 0;
  for (ShardedTensor& p : job->pieces) {
    Tensor host = Tensor::from_blob(static_cast<uint8_t*>(buffer_->p) + off, p.data.shape(), p.data.dtype());
    host.copy_from(p.data);
    p.data = host;
    off += (host.nbytes() + 63) / 64 * 64;
  }
  job->stats.snapshot_seconds = seconds_since(job->t0);
  if (opt.rank == 0) prepare_iteration_dir(dir, iteration);
  barrier(opt);
  Job* j = job.get();
  job->thread = std::thread([j] {
    try {
      j->stats.bytes = write_rank_files(j->dir, j->iteration, j->pieces, j->common, j->opt);
      j->stats.write_seconds = seconds_since(j->t0);
    } catch (...) {
      j->error = std::current_exception();
    }
    j->done = true;
  });
  job_ = std::move(job);
}

int64_t AsyncCheckpointSaver::finalize(SaveStats* stats) {
  if (!job_) return -1;
  std::unique_ptr<Job> job = std::move(job_);
  job->thread.join();
  if (job->error) std::rethrow_exception(job->error);
  barrier(job->opt);
  if (job->opt.rank == 0) job->stats.bytes = complete_checkpoint(job->dir, job->iteration, job->opt);
  barrier(job->opt);
  if (stats) *stats = job->stats;
  return job->iteration;
}

}  // namespace mt

// For writers that make the shard file themselves (checkpoint_stream.cpp): the same steps as
// save_checkpoint around it.
namespace mt::ckpt_detail {

void begin_iteration(const std::string& dir, int64_t iteration) { prepare_iteration_dir(dir, iteration); }

uint64_t finish_iteration(const std::string& dir, int64_t iteration, const SaveOptions& opt) {
  return complete_checkpoint(dir, iteration, opt);
}

}  // namespace mt::ckpt_detail
