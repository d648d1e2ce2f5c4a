#pragma once
// Helpers for the CUDA kernel tests: each op runs on CPU tensors (the reference backend) and on
// copies of them on cuda:0, and the results are compared by relative error
// ||got - want|| / ||want||. CUDA outputs start poisoned with NaN so a kernel that skips an
// element fails loudly. Every test first skips when no device is visible:
//   if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/cuda/cuda_backend.h"
#include "core/tensor.h"
#include "kernels/elementwise.h"
#include "kernels/kernel_testing.h"

namespace mt::cuda_testing {

using namespace mt::testing;

inline Device gpu() { return Device::cuda(0); }

inline Tensor to_gpu(const Tensor& t) { return t.to(gpu()); }
inline Tensor to_host(const Tensor& t) { return t.to(Device::cpu()); }

// A CUDA tensor filled with NaN (floats) or -1 bit patterns (integers).
inline Tensor poisoned(const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, gpu());
  if (is_floating(dtype)) fill(t, std::numeric_limits<float>::quiet_NaN());
  return t;
}
inline Tensor poisoned_like(const Tensor& t) { return poisoned(t.shape(), t.dtype()); }

// The same, or a copy of a CPU tensor on the GPU, starting `shift` elements into its allocation
// (shift = 1 breaks 16-byte alignment, which sends kernels to their per-element paths).
inline Tensor poisoned_shifted(const Shape& shape, DType dtype, int64_t shift) {
  Tensor buf = poisoned({shape_numel(shape) + shift}, dtype);
  return buf.flat_slice(shift, shape_numel(shape), shape);
}
inline Tensor to_gpu_shifted(const Tensor& t, int64_t shift) {
  Tensor v = poisoned_shifted(t.shape(), t.dtype(), shift);
  v.copy_from(t);
  return v;
}

// ||got - want|| / ||want|| in double; `got` may live on the GPU. NaN in got gives NaN (which
// fails every EXPECT_LT). A zero reference compares the absolute norm instead.
inline double rel_err(const Tensor& got, const Tensor& want) {
  const auto g = to_vec(got.is_cuda() ? to_host(got) : got);
  const auto w = to_vec(want.is_cuda() ? to_host(want) : want);
  EXPECT_EQ(g.size(), w.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size() && i < w.size(); ++i) {
    const double d = double(g[i]) - double(w[i]);
    num += d * d;
    den += double(w[i]) * double(w[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Bitwise equality of two tensors (either device).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return bitwise_equal(a.is_cuda() ? to_host(a) : a, b.is_cuda() ? to_host(b) : b);
}

// The tolerance a dtype's output is held to, for ops computed in fp32 and rounded once.
inline double tol_for(DType dt, double fp32_tol = 1e-5) {
  switch (dt) {
    case DType::BF16: return 1e-2;
    case DType::F16: return 2e-3;
    default: return fp32_tol;
  }
}

inline const char* name_of(DType dt) { return dt == DType::F32 ? "fp32" : dt == DType::BF16 ? "bf16" : "fp16"; }

}  // namespace mt::cuda_testing
