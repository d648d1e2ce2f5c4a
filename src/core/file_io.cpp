#include "core/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace mt {

namespace {

// Opens `path` for reading without blocking on a FIFO (O_NONBLOCK; regular files ignore it) and
// checks it is a regular file. Returns the descriptor and fills `st`.
int open_regular(const std::string& path, const std::string& what, struct stat& st) {
  const std::string name = what.empty() ? path : what + " " + path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) MT_USER_ERROR("cannot open {}: {}", name, std::strerror(errno));
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    MT_USER_ERROR("cannot stat {}: {}", name, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    MT_USER_ERROR("{} is not a regular file ({})", name,
                  S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
  }
  return fd;
}

}  // namespace

std::string read_regular_file(const std::string& path, const std::string& what, size_t max_bytes) {
  struct stat st;
  const int fd = open_regular(path, what, st);
  const std::string name = what.empty() ? path : what + " " + path;
  if (size_t(st.st_size) > max_bytes) {
    ::close(fd);
    MT_USER_ERROR("{}: {} bytes, more than the {} this file may have", name, st.st_size, max_bytes);
  }
  std::string out(size_t(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : 0;
      ::close(fd);
      MT_USER_ERROR("cannot read {}: {}", name, e ? std::strerror(e) : "the file shrank while being read");
    }
    got += size_t(n);
  }
  ::close(fd);
  return out;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  struct stat st;
  int fd = open_regular(path, "", st);
  if (fd < 0) MT_USER_ERROR("cannot open {}: {}", path, std::strerror(errno));
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      MT_USER_ERROR("cannot map {}: {}", path, std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

void MappedFile::release() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp." + std::to_string(::getpid())) {
  FILE* f = std::fopen(tmp_path_.c_str(), "wb");
  if (!f) MT_USER_ERROR("cannot create {}: {}", tmp_path_, std::strerror(errno));
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  file_ = f;
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_) std::fclose(static_cast<FILE*>(file_));
  if (!committed_) std::remove(tmp_path_.c_str());
}

void AtomicFileWriter::write(const void* p, size_t n) {
  MT_CHECK(file_ && !committed_, "write after commit of {}", path_);
  if (n && std::fwrite(p, 1, n, static_cast<FILE*>(file_)) != n)
    MT_USER_ERROR("cannot write {}: {}", tmp_path_, std::strerror(errno));
  written_ += n;
}

void AtomicFileWriter::commit() {
  MT_CHECK(file_ && !committed_, "double commit of {}", path_);
  FILE* f = static_cast<FILE*>(file_);
  file_ = nullptr;
  bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int e = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) MT_USER_ERROR("cannot write {}: {}", tmp_path_, std::strerror(e ? e : errno));
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    MT_USER_ERROR("cannot rename {} to {}: {}", tmp_path_, path_, std::strerror(errno));
  committed_ = true;
  // Make the rename itself durable.
  std::string dir = path_.find('/') == std::string::npos ? "." : path_.substr(0, path_.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace mt
