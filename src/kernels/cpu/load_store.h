#pragma once
// Storage-type plumbing for the CPU kernels. Float tensors are stored as float, bf16 or f16
// and always computed in fp32: kernels are templates over the storage type T, load elements
// with to_f32 and store with from_f32<T>, and are instantiated through dispatch_float.
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/tensor.h"

namespace mt::cpu {

// Calls fn(T{}) with T the storage type of `dtype` (float, bf16 or f16) and returns its result.
template <class Fn>
decltype(auto) dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32:
      return fn(float{});
    case DType::BF16:
      return fn(bf16{});
    case DType::F16:
      return fn(f16{});
    default:
      break;
  }
  fail_check(__FILE__, __LINE__, "is_floating(dtype)", std::string(dtype_name(dtype)));
}

template <class T>
inline void load_row(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = to_f32(src[i]);
}
template <class T>
inline void store_row(const float* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_f32<T>(src[i]);
}

// A small float tensor (a weight vector, a bias) as an fp32 vector; empty when t is null.
inline std::vector<float> to_f32_vector(const Tensor* t) {
  std::vector<float> v;
  if (!t) return v;
  v.resize(size_t(t->numel()));
  dispatch_float(t->dtype(), [&](auto tag) { load_row(t->data<decltype(tag)>(), v.data(), t->numel()); });
  return v;
}

}  // namespace mt::cpu
