#pragma once
// Which checkpoint a `--load PATH [--ckpt-step N]` names, and the housekeeping of a save
// directory (the temporaries a killed writer leaves behind).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mt {

struct CheckpointLocation {
  std::string dir;         // a save directory, or an iteration directory itself (iteration -1)
  int64_t iteration = -1;  // for CheckpointReader(dir, iteration)
};

// PATH an iteration directory itself (it holds metadata.json): that one (step must be < 0).
// Else, in the save directory PATH: iteration `step` when step >= 0 (UserError naming the
// complete iterations there when it is not one of them), or the latest (find_latest_checkpoint,
// warnings on `warn`). False when PATH holds no checkpoint at all (missing or empty directory).
// UserError when PATH is a file, or when `step` is given with an iteration directory.
bool locate_checkpoint(const std::string& path, int64_t step, CheckpointLocation& out, std::FILE* warn);

// The complete iterations (metadata.json written) in a save directory, ascending.
std::vector<int64_t> complete_iterations(const std::string& dir);
// Whether `dir` holds anything a save would replace: a tracker or an iter_* directory.
bool holds_checkpoints(const std::string& dir);

// Removes the temporary files (NAME.tmp.PID, AtomicFileWriter's and the shard writer's) that
// writers killed mid-save left in DIR and its iteration directories, except those of live
// processes on this host. Call while no save of this run is in flight. Returns how many.
int remove_stale_temporaries(const std::string& dir);

}  // namespace mt
