#include "core/tensor.h"

#include <limits>

#include <cstring>

#include "core/allocator.h"
#include "core/error.h"

namespace mt {
namespace {
DeviceMemOps g_dev_ops;

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = int64_t(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}
}  // namespace

void register_device_mem_ops(const DeviceMemOps& ops) { g_dev_ops = ops; }

Storage::~Storage() {
  if (owned && data) allocator_for(device).deallocate(data, bytes);
}

int64_t shape_numel(const Shape& s) {
  // Saturates instead of overflowing: a shape from bad input then fails its allocation cleanly.
  int64_t n = 1;
  for (auto d : s)
    if (__builtin_mul_overflow(n, d, &n)) return std::numeric_limits<int64_t>::max();
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape) MT_CHECK(d >= 0, "negative dimension in {}", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage_->device = device;
  t.storage_->owned = true;
  t.storage_->data = allocator_for(device).allocate(t.storage_->bytes);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = data;
  t.storage_->bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage_->device = device;
  t.storage_->owned = false;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

int64_t Tensor::numel() const { return shape_numel(shape_); }

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void* Tensor::raw() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data) + offset_ * int64_t(dtype_size(dtype_));
}

Tensor Tensor::view(const Shape& shape) const {
  MT_CHECK(is_contiguous(), "view of a non-contiguous tensor {}", str());
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MT_CHECK(infer < 0, "two -1 dimensions in view {}", shape_str(shape));
      infer = int64_t(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known ? numel() / known : 0;
  MT_CHECK(shape_numel(s) == numel(), "view {} of {}", shape_str(shape), str());
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::flat_slice(int64_t start, int64_t count, const Shape& shape) const {
  MT_CHECK(is_contiguous(), "flat_slice of a non-contiguous tensor");
  MT_CHECK(start >= 0 && count >= 0 && start + count <= numel(), "flat_slice [{}, +{}) of {}", start, count, str());
  MT_CHECK(shape_numel(shape) == count, "flat_slice shape {} for {} elements", shape_str(shape), count);
  Tensor t = *this;
  t.offset_ += start;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::narrow0(int64_t start, int64_t len) const {
  MT_CHECK(dim() >= 1 && start >= 0 && start + len <= shape_[0], "narrow0({}, {}) of {}", start, len, str());
  Shape s = shape_;
  s[0] = len;
  int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  return flat_slice(start * row, len * row, s);
}

void Tensor::zero_() const {
  if (!defined() || numel() == 0) return;
  MT_CHECK(is_contiguous(), "zero_ of non-contiguous tensor");
  if (device().is_cpu()) {
    std::memset(raw(), 0, nbytes());
  } else {
    MT_CHECK(g_dev_ops.memset_zero, "no CUDA backend");
    g_dev_ops.memset_zero(raw(), nbytes(), device());
  }
}

void Tensor::copy_from(const Tensor& src) const {
  MT_CHECK(src.numel() == numel() && src.dtype() == dtype(), "copy_from {} <- {}", str(), src.str());
  MT_CHECK(is_contiguous() && src.is_contiguous(), "copy_from needs contiguous tensors");
  if (numel() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(raw(), src.raw(), nbytes());
  } else {
    MT_CHECK(g_dev_ops.copy, "no CUDA backend");
    g_dev_ops.copy(raw(), device(), src.raw(), src.device(), nbytes());
  }
}

Tensor Tensor::to(Device d) const {
  Tensor t = empty(shape_, dtype_, d);
  t.copy_from(*this);
  return t;
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " " + device().str();
}

}  // namespace mt
