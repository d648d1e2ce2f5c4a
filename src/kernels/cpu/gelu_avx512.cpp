// GeLU with AVX-512 (see gelu_avx512.h; the math is activation.cpp's, e^x as exp_avx512.h's):
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3),  tanh(u) = 1 - 2 / (e^2u + 1)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// Built with AVX-512 flags like sgemm_avx512.cpp, with the same rules: no C++ library templates,
// internal linkage for everything but the entry points.
#include "kernels/cpu/gelu_avx512.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx512.h"

namespace mt::cpu::avx512 {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoeff = 0.044715f;

inline __m512 set1(float v) { return _mm512_set1_ps(v); }

// tanh(u) for u = sqrt(2/pi) (x + c x^3), as 1 - 2 / (e^2u + 1). 2u is clamped to [-20, 20]
// (|tanh| rounds to 1 beyond |u| = 9.1), so e^2u + 1 is finite and at least 1, and the
// reciprocal can be vrcp14ps with one Newton step (relative error ~2^-28) instead of a
// division, which alone took ~40% of the time. A NaN x gives NaN through the factor x outside.
inline __m512 gelu_tanh(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 u = _mm512_mul_ps(set1(kSqrt2OverPi), _mm512_fmadd_ps(set1(kGeluCoeff), x3, x));
  const __m512 u2 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(u, u), set1(-20.0f)), set1(20.0f));
  const __m512 d = _mm512_add_ps(exp_bounded(u2), set1(1.0f));
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, set1(1.0f)), r);  // r (2 - d r)
  return _mm512_fnmadd_ps(set1(2.0f), r, set1(1.0f));
}

inline __m512 gelu16(__m512 x) {
  const __m512 t = gelu_tanh(x);
  return _mm512_mul_ps(_mm512_mul_ps(set1(0.5f), x), _mm512_add_ps(set1(1.0f), t));
}

inline __m512 dgelu16(__m512 dy, __m512 x) {
  const __m512 t = gelu_tanh(x), one = set1(1.0f), half = set1(0.5f);
  const __m512 du =
      _mm512_mul_ps(set1(kSqrt2OverPi), _mm512_fmadd_ps(set1(3.0f * kGeluCoeff), _mm512_mul_ps(x, x), one));
  const __m512 left = _mm512_mul_ps(half, _mm512_add_ps(one, t));
  const __m512 right = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_fnmadd_ps(t, t, one)), du);
  return _mm512_mul_ps(dy, _mm512_add_ps(left, right));
}

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

}  // namespace

void gelu_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lanes(n - i);
    _mm512_mask_storeu_ps(y + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

void gelu_backward(const float* dy, const float* x, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = lanes(n - i);
    _mm512_mask_storeu_ps(dx + i, m, dgelu16(_mm512_maskz_loadu_ps(m, dy + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}

}  // namespace mt::cpu::avx512
