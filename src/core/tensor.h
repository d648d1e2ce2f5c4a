#pragma once
// Tensor: a view (storage + shape + strides + offset + dtype + device). Copying a Tensor
// copies the view, not the data. Ops live in src/kernels/; this type only describes memory.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"

namespace mt {

using Shape = std::vector<int64_t>;

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  bool owned = false;
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  // A non-owning view of memory the caller keeps alive (mmap'd files, foreign buffers).
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t i) const { return shape_[i < 0 ? i + dim() : i]; }
  int64_t numel() const;
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* raw() const;
  template <class T> T* data() const { return static_cast<T*>(raw()); }

  // Views of a contiguous tensor.
  Tensor view(const Shape& shape) const;                      // same numel, -1 infers one dim
  Tensor flat_slice(int64_t start, int64_t count, const Shape& shape) const;  // elements [start, start+count)
  Tensor narrow0(int64_t start, int64_t len) const;           // rows [start, start+len) of dim 0

  // Fills with zero bytes (any device).
  void zero_() const;
  // Copies between tensors of equal numel and dtype, across devices (contiguous only).
  void copy_from(const Tensor& src) const;
  // A contiguous copy on another device (or a clone on the same one).
  Tensor to(Device d) const;

  std::string str() const;  // "bf16[4, 8] cpu"

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::F32;
};

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Device memory plumbing used by Tensor; the CUDA backend installs real functions.
struct DeviceMemOps {
  void (*memset_zero)(void* p, size_t bytes, Device d) = nullptr;
  void (*copy)(void* dst, Device dd, const void* src, Device sd, size_t bytes) = nullptr;
};
void register_device_mem_ops(const DeviceMemOps& ops);

}  // namespace mt
