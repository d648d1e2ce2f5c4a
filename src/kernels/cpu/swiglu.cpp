// SwiGLU on rows x = [gate | up] (each F wide):
//   y = silu(g) u,  silu(g) = g sigmoid(g)
//   dgate = dy u sigmoid(g) (1 + g (1 - sigmoid(g))),  dup = dy silu(g)
// fp32 math, one rounding. Forward reads 2F and writes F per row; backward reads 3F, writes 2F.
// Rows are split across threads and every element is a pure function of its inputs (4-lane
// loops with the vectorised exp of fast_math.h), so results do not depend on the thread count.
// fp32 rows on the AVX-512 and AVX2 paths run 8 lanes at a time instead (swiglu_avx2.h).
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/load_store.h"
#include "kernels/cpu_isa.h"
#if defined(__x86_64__)
#include "kernels/cpu/swiglu_avx2.h"
#endif

namespace mt::cpu {
namespace {

// Lanes [j, j + 4) of a row as fp32; past n (the row's tail) they are 0, which keeps exp finite.
template <class T>
inline f32x4 lanes(const T* p, int64_t j, int64_t n) {
  f32x4 v = splat(0.0f);
  for (int64_t k = 0; k < 4 && j + k < n; ++k) v[k] = to_f32(p[j + k]);
  return v;
}
template <class T>
inline void put_lanes(T* p, int64_t j, int64_t n, f32x4 v) {
  for (int64_t k = 0; k < 4 && j + k < n; ++k) p[j + k] = from_f32<T>(v[k]);
}

// 1 / (1 + e^-g): e^-g = inf for g < -88.7 gives 0, as it should.
inline f32x4 sigmoid4(f32x4 g) { return splat(1.0f) / (splat(1.0f) + exp4(-g)); }

// Whether fp32 rows of T take swiglu_avx2.h's 8 lanes.
template <class T>
bool simd_rows() {
#if defined(__x86_64__)
  return std::is_same_v<T, float> && cpu_isa() != CpuIsa::kPortable;
#else
  return false;
#endif
}

template <class T>
void swiglu_forward_t(const T* x, T* y, int64_t rows, int64_t F) {
  const bool simd = simd_rows<T>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = x + r * 2 * F;
    const T* up = gate + F;
    T* out = y + r * F;
#if defined(__x86_64__)
    if constexpr (std::is_same_v<T, float>) {
      if (simd) {
        avx2::swiglu_forward(gate, up, out, F);
        continue;
      }
    }
#endif
    for (int64_t j = 0; j < F; j += 4) {
      const f32x4 g = lanes(gate, j, F), u = lanes(up, j, F);
      put_lanes(out, j, F, g * sigmoid4(g) * u);
    }
  }
}

template <class T>
void swiglu_backward_t(const T* dy, const T* x, T* dx, int64_t rows, int64_t F) {
  const bool simd = simd_rows<T>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = x + r * 2 * F;
    const T* up = gate + F;
    const T* d = dy + r * F;
    T* dgate = dx + r * 2 * F;
    T* dup = dgate + F;
#if defined(__x86_64__)
    if constexpr (std::is_same_v<T, float>) {
      if (simd) {
        avx2::swiglu_backward(d, gate, up, dgate, dup, F);
        continue;
      }
    }
#endif
    for (int64_t j = 0; j < F; j += 4) {
      const f32x4 g = lanes(gate, j, F), u = lanes(up, j, F), dd = lanes(d, j, F);
      const f32x4 sg = sigmoid4(g);
      put_lanes(dgate, j, F, dd * u * sg * (splat(1.0f) + g * (splat(1.0f) - sg)));
      put_lanes(dup, j, F, dd * g * sg);
    }
  }
}

}  // namespace

void swiglu_forward(const Tensor& x, const Tensor& y) {
  const int64_t F = y.size(-1), rows = F > 0 ? y.numel() / F : 0;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_forward_t(x.data<T>(), y.data<T>(), rows, F);
  });
}

void swiglu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx) {
  const int64_t F = dy.size(-1), rows = F > 0 ? dy.numel() / F : 0;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_backward_t(dy.data<T>(), x.data<T>(), dx.data<T>(), rows, F);
  });
}

}  // namespace mt::cpu
