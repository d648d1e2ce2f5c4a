#pragma once
// Native distributed checkpoints: sharded, reshardable, atomic, checksummed.
//
//   DIR/latest_checkpointed_iteration.txt     the tracker (Megatron's name and format: "100")
//   DIR/iter_0000100/shard_00000_of_00004.safetensors   one file per rank, its pieces
//   DIR/iter_0000100/common.json              small state (iteration, schedulers, args), rank 0
//   DIR/iter_0000100/metadata.json            the index: every tensor, its global shape and
//                                             which byte range of which file holds which box,
//                                             with CRC-32C checksums; written last
//
// Every file goes through a temporary name, fsync and rename; metadata.json is written only
// after every rank's shard is on disk (a barrier), and the tracker after it. So an iteration
// directory without metadata.json is a save that did not finish: loading skips it with a
// warning and takes the previous complete one. A shard file is valid safetensors: each piece is
// stored under its global name (then "#1", "#2" for more pieces of one tensor) and the file's
// __metadata__["megatron.cpp"] holds each piece's box and checksum.
//
// Loading reads metadata.json and assembles whatever boxes the caller asks for from whatever
// pieces overlap them, so any tensor-parallel / data-parallel split, with or without the
// distributed optimizer's flat ranges, loads any other (resharding on load). Pipeline stages and
// expert shards are just more names and boxes: nothing in the format assumes a layout.
//
// This library does not talk to other ranks: collective steps take a barrier callback (the
// trainer passes its world communicator's barrier; single process: none). All ranks must see
// one shared file system.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/sharded_tensor.h"
#include "core/file_io.h"

namespace mt {

constexpr int kCheckpointFormatVersion = 1;

// The world the checkpoint was saved in; recorded for `megatron checkpoint inspect`, never needed
// to load.
struct CheckpointLayout {
  int tp = 1, pp = 1, dp = 1, cp = 1, ep = 1;
  bool distributed_optimizer = false;
};

struct SaveOptions {
  int rank = 0, world_size = 1;
  std::function<void()> barrier;  // a world barrier; required when world_size > 1
  CheckpointLayout layout;
  int keep_last = 0;  // > 0: once the new iteration is complete, delete all but the newest K
  // Progress events, for tests (a slowed writer, the order of steps): "begin <rank>",
  // "shard <rank>" (this rank's file is on disk), "metadata", "tracker", "deleted iter_0000010".
  std::function<void(const std::string& event)> on_event;
};

std::string iteration_dir_name(int64_t iteration);  // "iter_0000100"
std::string tracker_path(const std::string& dir);    // DIR/latest_checkpointed_iteration.txt

// Test-only: MT_TEST_CHECKPOINT_WRITE_DELAY_MS=N in the environment makes every rank sleep N ms
// after the iteration directory exists and before it writes its shard file, so that a test can
// kill a save in flight (tests/python/test_checkpoint_kill.py). Never set it otherwise.
constexpr const char* kTestWriteDelayEnv = "MT_TEST_CHECKPOINT_WRITE_DELAY_MS";

struct SaveStats {
  uint64_t bytes = 0;           // rank 0: every file of the checkpoint; other ranks: their shard
  double snapshot_seconds = 0;  // async: copying the pieces to host memory (training waits)
  double write_seconds = 0;     // from the start of the save until this rank's shard was on disk
};

// Collective: every rank calls it with its own pieces (the tensors may live on any device; only
// replica_id 0 pieces are written) and the same `common`, which rank 0 writes. Returns when the
// checkpoint is complete and the tracker names it. UserError on a write failure or inconsistent
// pieces (rank 0; the iteration stays incomplete and the previous checkpoint stays current).
SaveStats save_checkpoint(const std::string& dir, int64_t iteration, const std::vector<ShardedTensor>& shards,
                          const nlohmann::json& common, const SaveOptions& opt);

// --async-save: start() snapshots the pieces to host memory (pinned when CUDA is built) and
// writes this rank's file on a background thread while training continues; finalize() waits for
// it and completes the checkpoint (barrier; rank 0 writes metadata.json and the tracker). Both
// are collective; call finalize() at the same point on every rank (before the next save, and
// before exiting). A failed write is rethrown by finalize().
class AsyncCheckpointSaver {
 public:
  AsyncCheckpointSaver();
  ~AsyncCheckpointSaver();  // waits for the writer; does not finalize (the save stays incomplete)
  AsyncCheckpointSaver(const AsyncCheckpointSaver&) = delete;
  AsyncCheckpointSaver& operator=(const AsyncCheckpointSaver&) = delete;

  // Allocates the host snapshot buffer for pieces like `shards` on a background thread, so that
  // the first start() only copies: pinning tens of GB takes seconds (8 s for the 18 GB of GPT
  // 1.3B with Adam state on an H200 host) that training would otherwise wait for. Optional.
  void prepare(const std::vector<ShardedTensor>& shards);
  // Finalizes a save still in flight, then starts this one.
  void start(const std::string& dir, int64_t iteration, const std::vector<ShardedTensor>& shards,
             const nlohmann::json& common, const SaveOptions& opt);
  bool in_flight() const;      // started and not finalized
  bool writer_done() const;    // this rank's file is written (or failed); never blocks
  // The iteration completed, or -1 when none was in flight; `stats` (optional) gets its sizes
  // and times.
  int64_t finalize(SaveStats* stats = nullptr);

 private:
  struct Job;
  struct HostBuffer;
  std::unique_ptr<Job> job_;
  std::unique_ptr<HostBuffer> buffer_;  // reused across saves (pinned allocations are slow)
  std::thread preparing_;               // prepare()'s allocation, joined before the buffer is used
};

// The iteration to load from DIR: the tracker's; without a tracker the newest complete one.
// Newer iteration directories (incomplete ones: a save that did not finish) are skipped with a
// warning on `warn` (null: silent). -1: no checkpoint (DIR missing or empty). UserError when the
// tracker names an iteration whose metadata.json is missing, or the tracker is unreadable.
int64_t find_latest_checkpoint(const std::string& dir, std::FILE* warn = stderr);

// A complete checkpoint, opened for reading.
class CheckpointReader {
 public:
  // `dir`: a save directory (iteration -1: find_latest_checkpoint; UserError if there is none)
  // or an iteration directory itself. Reads and checks metadata.json and common.json.
  explicit CheckpointReader(const std::string& dir, int64_t iteration = -1, std::FILE* warn = stderr);
  ~CheckpointReader();

  struct Piece {
    int file;        // index into files()
    std::string key; // safetensors name in that file
    PieceBox box;
    uint64_t begin = 0, end = 0;  // byte range in the file
    uint32_t crc = 0;
  };
  struct TensorInfo {
    std::string name;
    DType dtype;
    Shape global_shape;
    std::vector<Piece> pieces;
  };
  struct FileInfo {
    std::string name;  // within path()
    int rank = 0;
    uint64_t bytes = 0;
    uint32_t header_crc = 0;
    uint64_t header_bytes = 0;
  };

  int64_t iteration() const { return iteration_; }
  const std::string& path() const { return path_; }  // the iteration directory
  const nlohmann::json& common() const { return common_; }
  const nlohmann::json& metadata() const { return meta_; }
  CheckpointLayout layout() const { return layout_; }
  int world_size() const { return int(files_.size()); }
  const std::vector<FileInfo>& files() const { return files_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  // Fills each request's data with its box (any layout) from the pieces that overlap it,
  // verifying the checksum of every piece and file header it reads. UserError naming the file
  // and tensor for a missing tensor (unless allow_missing), a global-shape mismatch, a truncated
  // or corrupt file. `threads` 0: a few. Returns the bytes of the stored pieces it read.
  uint64_t load(const std::vector<ShardedTensor>& requests, int threads = 0) const;

  // Reads and checks every byte of every file (`megatron checkpoint inspect --verify`).
  void verify_all() const;

 private:
  const MappedFile& file(int i) const;  // mapped and size/header-checked on first use
  void verify_piece(const TensorInfo& t, const Piece& p) const;

  std::string path_;
  int64_t iteration_ = 0;
  nlohmann::json meta_, common_;
  CheckpointLayout layout_;
  std::vector<FileInfo> files_;
  std::map<std::string, TensorInfo> tensors_;
  struct Cache;
  std::unique_ptr<Cache> cache_;
};

// Opens the latest checkpoint of DIR, loads `requests` and returns common.json; -1 in
// `iteration` when DIR holds none (nothing loaded).
nlohmann::json load_checkpoint(const std::string& dir, const std::vector<ShardedTensor>& requests,
                               int64_t* iteration = nullptr);

// Conflicting model arguments between a checkpoint's saved arguments and the current ones: a
// UserError naming every key of `keys` whose values differ ("--num-layers: checkpoint 24, now
// 12"); keys absent from either side are ignored. Keys are flag names without dashes, with "_".
void check_args_match(const nlohmann::json& saved, const nlohmann::json& current, const std::vector<std::string>& keys,
                      const std::string& checkpoint_path);

}  // namespace mt
