// GeLU (tanh approximation) and inverted dropout, elementwise and embarrassingly parallel.
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//   dropout: y[i] = keep(i) ? x[i] / (1 - p) : 0, keep(i) = philox_uniform(seed, stream, offset + i) > p
// Each reads its inputs once and writes its output once. Dropout draws one Philox block per four
// consecutive global elements j = offset + i (the four words of block j/4), the same numbers
// philox_uniform gives; an offset that is not a multiple of 4 starts and ends mid-block.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/rng.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/load_store.h"
#include "kernels/cpu_isa.h"
#if defined(__x86_64__)
#include "kernels/cpu/gelu_avx2.h"
#include "kernels/cpu/gelu_avx512.h"
#endif

namespace mt::cpu {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoeff = 0.044715f;

// tanh(u) = 1 - 2 / (exp(2u) + 1), on 4 lanes with the vectorised exp (libm's tanhf is a call
// per element and dominated the MLP's time). exp(2u) = inf gives 1, exp(2u) = 0 gives -1.
inline f32x4 tanh4(f32x4 u) { return splat(1.0f) - splat(2.0f) / (exp4(u + u) + splat(1.0f)); }

// Four lanes of p[i0..] as fp32; a short tail (n - i0 < 4) is zero-padded.
template <class T>
inline f32x4 load_lanes(const T* p, int64_t i0, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (i0 + 4 <= n) return load4(p + i0);
  }
  float v[4] = {0, 0, 0, 0};
  for (int64_t k = 0; k < 4 && i0 + k < n; ++k) v[k] = to_f32(p[i0 + k]);
  return load4(v);
}

template <class T>
inline void store_lanes(T* p, int64_t i0, int64_t n, f32x4 v) {
  if constexpr (std::is_same_v<T, float>) {
    if (i0 + 4 <= n) return store4(p + i0, v);
  }
  float o[4];
  store4(o, v);
  for (int64_t k = 0; k < 4 && i0 + k < n; ++k) p[i0 + k] = from_f32<T>(o[k]);
}

template <class T>
void gelu_forward_t(const T* x, T* y, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += 4) {
    const f32x4 v = load_lanes(x, i0, n);
    const f32x4 u = splat(kSqrt2OverPi) * (v + splat(kGeluCoeff) * v * v * v);
    store_lanes(y, i0, n, splat(0.5f) * v * (splat(1.0f) + tanh4(u)));
  }
}

// dx may alias dy: each chunk reads its dy before writing the same elements.
template <class T>
void gelu_backward_t(const T* dy, const T* x, T* dx, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += 4) {
    const f32x4 v = load_lanes(x, i0, n), g = load_lanes(dy, i0, n);
    const f32x4 u = splat(kSqrt2OverPi) * (v + splat(kGeluCoeff) * v * v * v);
    const f32x4 t = tanh4(u);
    const f32x4 du = splat(kSqrt2OverPi) * (splat(1.0f) + splat(3.0f * kGeluCoeff) * v * v);
    store_lanes(dx, i0, n, g * (splat(0.5f) * (splat(1.0f) + t) + splat(0.5f) * v * (splat(1.0f) - t * t) * du));
  }
}

// Philox blocks first .. last cover the global elements offset .. offset + n - 1; lanes outside
// that range belong to neighbouring slices and are skipped.
template <class T>
void dropout_t(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t stream, uint64_t offset) {
  const float inv_keep = 1.0f / (1.0f - p);
  const uint64_t first = offset / 4, end = offset + uint64_t(n);
  const int64_t blocks = int64_t((end + 3) / 4 - first);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const uint64_t blk = first + uint64_t(b);
    uint32_t r[4];
    philox_block(seed, stream, blk, r);
    for (int k = 0; k < 4; ++k) {
      const uint64_t j = blk * 4 + uint64_t(k);
      if (j < offset || j >= end) continue;
      const int64_t i = int64_t(j - offset);
      y[i] = from_f32<T>(u32_to_uniform(r[k]) > p ? to_f32(x[i]) * inv_keep : 0.0f);
    }
  }
}

void dropout(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, uint64_t offset) {
  if (p == 0.0f) {
    if (x.raw() != y.raw()) y.copy_from(x);
    return;
  }
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dropout_t(x.data<T>(), y.data<T>(), x.numel(), p, seed, stream, offset);
  });
}

// fp32 GeLU on the AVX-512 (16 lanes) or AVX2 (8 lanes) path, 4x / 2x the 4-lane loops above;
// chunks of kGeluChunk elements in parallel. Returns false when it did not run (portable path,
// half storage).
constexpr int64_t kGeluChunk = 4096;

bool gelu_forward_simd(const Tensor& x, const Tensor& y) {
#if defined(__x86_64__)
  const CpuIsa isa = cpu_isa();
  if (x.dtype() != DType::F32 || isa == CpuIsa::kPortable) return false;
  const auto fn = isa == CpuIsa::kAvx512 ? &avx512::gelu_forward : &avx2::gelu_forward;
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += kGeluChunk) fn(px + i, py + i, std::min(kGeluChunk, n - i));
  return true;
#else
  return false;
#endif
}

bool gelu_backward_simd(const Tensor& dy, const Tensor& x, const Tensor& dx) {
#if defined(__x86_64__)
  const CpuIsa isa = cpu_isa();
  if (x.dtype() != DType::F32 || isa == CpuIsa::kPortable) return false;
  const auto fn = isa == CpuIsa::kAvx512 ? &avx512::gelu_backward : &avx2::gelu_backward;
  const float *pdy = dy.data<float>(), *px = x.data<float>();
  float* pdx = dx.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += kGeluChunk) fn(pdy + i, px + i, pdx + i, std::min(kGeluChunk, n - i));
  return true;
#else
  return false;
#endif
}

}  // namespace

void gelu_forward(const Tensor& x, const Tensor& y) {
  if (gelu_forward_simd(x, y)) return;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gelu_forward_t(x.data<T>(), y.data<T>(), x.numel());
  });
}

void gelu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx) {
  if (gelu_backward_simd(dy, x, dx)) return;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gelu_backward_t(dy.data<T>(), x.data<T>(), dx.data<T>(), x.numel());
  });
}

// Inverted dropout is linear with a 0/(1/(1-p)) diagonal, so backward is forward applied to dy.
void dropout_forward(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, uint64_t offset) {
  dropout(x, y, p, seed, stream, offset);
}
void dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream, uint64_t offset) {
  dropout(dy, dx, p, seed, stream, offset);
}

}  // namespace mt::cpu
