#pragma once
// Shared by the op dispatchers (src/kernels/*.cpp): argument checks that name the op and the
// offending tensor, and the CPU/CUDA split. Not part of the public kernel API.
#include <initializer_list>

#include "core/error.h"
#include "core/tensor.h"

namespace mt::detail {

// Defined and contiguous.
inline void check_tensor(const char* op, const char* name, const Tensor& t) {
  MT_CHECK(t.defined(), "{}: {} is undefined", op, name);
  MT_CHECK(t.is_contiguous(), "{}: {} must be contiguous, got {}", op, name, t.str());
}
inline void check_float(const char* op, const char* name, const Tensor& t) {
  check_tensor(op, name, t);
  MT_CHECK(is_floating(t.dtype()), "{}: {} must be fp32/bf16/fp16, got {}", op, name, t.str());
}
inline void check_dtype(const char* op, const char* name, const Tensor& t, DType d) {
  check_tensor(op, name, t);
  MT_CHECK(t.dtype() == d, "{}: {} must be {}, got {}", op, name, dtype_name(d), t.str());
}
inline void check_shape(const char* op, const char* name, const Tensor& t, const Shape& s) {
  MT_CHECK(t.shape() == s, "{}: {} must have shape {}, got {}", op, name, shape_str(s), t.str());
}
inline void check_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  MT_CHECK(t.numel() == n, "{}: {} must have {} elements, got {}", op, name, n, t.str());
}
// t like ref: the same dtype and shape.
inline void check_like(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  check_dtype(op, name, t, ref.dtype());
  check_shape(op, name, t, ref.shape());
}
// A row normalisation's (LayerNorm's, RMSNorm's) common arguments: x and y (or dx) [.., C] of one
// float dtype, w C elements of x's dtype or fp32, rstd fp32 with one value per row.
inline void check_row_norm(const char* op, const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& rstd) {
  check_float(op, "x", x);
  check_float(op, "y/dx", y);
  check_float(op, "w", w);
  MT_CHECK(x.dim() >= 1 && x.size(-1) > 0, "{}: x {} needs a non-empty last dimension", op, x.str());
  MT_CHECK(y.dtype() == x.dtype(), "{}: {} must have x's dtype {}", op, y.str(), x.str());
  check_shape(op, "y/dx", y, x.shape());
  check_numel(op, "w", w, x.size(-1));
  MT_CHECK(w.dtype() == x.dtype() || w.dtype() == DType::F32, "{}: w {} must be fp32 or x's dtype", op, w.str());
  check_dtype(op, "rstd", rstd, DType::F32);
  check_numel(op, "rstd", rstd, x.numel() / x.size(-1));
}
// All given tensors (null = absent) on one device; returns whether that device is CUDA.
inline bool on_cuda(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) first = t;
    MT_CHECK(t->device() == first->device(), "{}: tensors on different devices ({} and {})", op, first->str(),
             t->str());
  }
  return first && first->is_cuda();
}

}  // namespace mt::detail

// `if (on_cuda) MT_CUDA_CALL(op(args, s));` runs cuda::op, or fails in a build without CUDA.
#ifdef MT_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#define MT_CUDA_CALL(call) return ::mt::cuda::call
#else
#define MT_CUDA_CALL(call) MT_CHECK(false, "{}: CUDA tensor, but this build has no CUDA backend", #call)
#endif
