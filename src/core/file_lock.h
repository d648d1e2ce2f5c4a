#pragma once
// An exclusive advisory lock on a directory (flock on DIR/.megatron.lock), held for the life of
// the object: two trainers saving into one --save directory would overwrite each other's
// checkpoints. The lock file stays behind (it is empty but for the holder's pid and host); the
// operating system releases the lock when the process dies, however it dies.
#include <string>

namespace mt {

class DirectoryLock {
 public:
  // Creates DIR if needed. UserError naming `flag`, DIR and the holder (pid, host) when another
  // process holds the lock, or when the lock file cannot be created.
  DirectoryLock(const std::string& dir, const std::string& flag);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  static constexpr const char* kFileName = ".megatron.lock";

 private:
  int fd_ = -1;
};

}  // namespace mt
