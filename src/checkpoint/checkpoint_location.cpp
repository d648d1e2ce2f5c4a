#include "checkpoint/checkpoint_location.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_internal.h"
#include "core/error.h"

namespace mt {

namespace fs = std::filesystem;
using namespace ckpt_detail;

std::vector<int64_t> complete_iterations(const std::string& dir) {
  std::vector<int64_t> out;
  for (auto [it, complete] : list_iterations(dir))
    if (complete) out.push_back(it);
  return out;
}

bool holds_checkpoints(const std::string& dir) {
  std::error_code ec;
  return fs::exists(tracker_path(dir), ec) || !list_iterations(dir).empty();
}

bool locate_checkpoint(const std::string& path, int64_t step, CheckpointLocation& out, std::FILE* warn) {
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_directory(path, ec))
    MT_USER_ERROR("--load {}: not a directory (expected a save directory or one of its iter_* directories)", path);
  if (fs::exists(join(path, kMetadataFile), ec)) {
    if (step >= 0)
      MT_USER_ERROR("--ckpt-step {}: --load {} is already an iteration directory; give its parent directory to choose "
                    "an iteration", step, path);
    out = CheckpointLocation{path, -1};
    return true;
  }
  if (step >= 0) {
    const std::vector<int64_t> its = complete_iterations(path);
    if (std::find(its.begin(), its.end(), step) == its.end()) {
      std::string have;
      for (int64_t it : its) have += (have.empty() ? "" : ", ") + std::to_string(it);
      MT_USER_ERROR("--ckpt-step {}: {} holds no complete checkpoint of that iteration ({})", step, path,
                    have.empty() ? "it holds none" : "it holds " + have);
    }
    out = CheckpointLocation{path, step};
    return true;
  }
  const int64_t it = find_latest_checkpoint(path, warn);
  if (it < 0) return false;
  out = CheckpointLocation{path, it};
  return true;
}

namespace {

// NAME.tmp.PID -> PID (0 when the name is not a temporary).
long temporary_pid(const std::string& name) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || at == 0) return 0;
  long pid = 0;
  const char* b = name.data() + at + 5;
  const char* e = name.data() + name.size();
  auto r = std::from_chars(b, e, pid);
  return r.ec == std::errc() && r.ptr == e && pid > 0 ? pid : 0;
}

bool process_alive(long pid) { return ::kill(pid_t(pid), 0) == 0 || errno == EPERM; }

int remove_in(const fs::path& dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const long pid = temporary_pid(e.path().filename().string());
    if (pid == 0 || !e.is_regular_file(ec) || process_alive(pid)) continue;
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

}  // namespace

int remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  int removed = remove_in(dir);
  for (auto [it, complete] : list_iterations(dir)) removed += remove_in(fs::path(dir) / iteration_dir_name(it));
  return removed;
}

}  // namespace mt
