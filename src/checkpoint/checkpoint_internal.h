#pragma once
// Pieces shared by checkpoint_save.cpp and checkpoint_load.cpp; not part of the API.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace mt::ckpt_detail {

constexpr const char* kMetadataFile = "metadata.json";
constexpr const char* kCommonFile = "common.json";
constexpr const char* kTrackerFile = "latest_checkpointed_iteration.txt";
constexpr const char* kShardMetadataKey = "megatron.cpp";

std::string shard_file_name(int rank, int world_size);  // "shard_00003_of_00004.safetensors"
std::string join(const std::string& dir, const std::string& name);

// Runs fn(i) for i in [0, n) on up to `threads` threads; rethrows the first exception.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn);
int default_threads();

// Iteration directories under `dir` (iteration -> complete, i.e. has metadata.json).
std::vector<std::pair<int64_t, bool>> list_iterations(const std::string& dir);
// The tracker's iteration; -1 when there is no tracker. UserError if unreadable.
int64_t read_tracker(const std::string& dir);
void write_text_atomic(const std::string& path, const std::string& text);
void fsync_dir(const std::string& dir);

// save_checkpoint's steps around writing the shard files, for writers that make a shard file
// themselves (checkpoint_stream.cpp). begin_iteration: DIR/iter_N exists and is empty (a complete
// checkpoint of that iteration first stops being current). finish_iteration, once every shard
// file and common.json are written: indexes the shards into metadata.json, then the tracker.
void begin_iteration(const std::string& dir, int64_t iteration);
uint64_t finish_iteration(const std::string& dir, int64_t iteration, const SaveOptions& opt);

}  // namespace mt::ckpt_detail
