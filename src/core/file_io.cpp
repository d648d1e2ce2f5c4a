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

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) MT_USER_ERROR("cannot open {}: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    MT_USER_ERROR("cannot stat {}: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    MT_USER_ERROR("{} is not a regular file", path);
  }
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
