#include "core/allocator.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "core/error.h"

namespace mt {
namespace {

// Blocks are rounded up to a size class (powers of two split in 4) and kept on a free list
// per class when released. Memory is returned to the system only at exit.
class CachingHostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes > (size_t(1) << 56)) fail(bytes);  // no machine has 64 PiB; size_class would overflow
    size_t cls = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ += cls;
    if (in_use_ > peak_) peak_ = in_use_;
    auto& list = free_[cls];
    if (!list.empty()) {
      void* p = list.back();
      list.pop_back();
      return p;
    }
    void* p = std::aligned_alloc(64, cls);
    if (!p) {
      in_use_ -= cls;
      fail(cls);
    }
    return p;
  }
  void deallocate(void* p, size_t bytes) override {
    if (!p) return;
    size_t cls = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= cls;
    free_[cls].push_back(p);
  }
  size_t bytes_in_use() const override { return in_use_; }
  size_t peak_bytes() const override { return peak_; }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = in_use_;
  }

  static size_t size_class(size_t bytes) {
    if (bytes <= 256) return 256;
    size_t p = 256;
    while (p < bytes) p <<= 1;
    size_t q = p >> 2;  // quarter steps between p/2 and p
    size_t c = p >> 1;
    while (c < bytes) c += q;
    return c;
  }

 private:
  [[noreturn]] void fail(size_t bytes) const {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    const double total = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    MT_USER_ERROR("cannot allocate {:.2f} GiB of host memory ({:.2f} GiB in use, {:.1f} GiB in the machine): make "
                  "the model, micro batch or sequence smaller, or spread it over more ranks",
                  double(bytes) / gib, double(in_use_) / gib, total / gib);
  }
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  size_t in_use_ = 0, peak_ = 0;
};

Allocator* (*g_device_factory)(int) = nullptr;

}  // namespace

namespace {
CachingHostAllocator& caching_host_allocator() {
  static CachingHostAllocator* a = new CachingHostAllocator();  // never destroyed: outlives tensors
  return *a;
}
}  // namespace

size_t host_block_bytes(size_t bytes) { return bytes == 0 ? 0 : CachingHostAllocator::size_class(bytes); }
void reset_host_peak_bytes() { caching_host_allocator().reset_peak(); }

Allocator& host_allocator() {
  static CachingHostAllocator* a = &caching_host_allocator();
  return *a;
}

void register_device_allocator(Allocator* (*factory)(int)) { g_device_factory = factory; }

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return host_allocator();
  if (!g_device_factory) MT_USER_ERROR("device {} requested but this build has no CUDA backend", d.str());
  return *g_device_factory(d.index);
}

}  // namespace mt
