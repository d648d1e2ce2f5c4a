// GeLU with AVX2 + FMA (gelu_avx2.h): gelu_avx512.cpp's math and clamps in 8 lanes. There is no
// vrcp14ps in AVX2 (vrcpps is only 12 bits, two Newton steps would be needed), so 1 / (e^2u + 1)
// is a division. A short tail runs the same code on a masked load, so each element's result
// depends on its inputs only. Built with -mavx2 -mfma, with sgemm_avx2.cpp's rules.
#include "kernels/cpu/gelu_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx2.h"

namespace mt::cpu::avx2 {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoeff = 0.044715f;

inline __m256 set1(float v) { return _mm256_set1_ps(v); }

// tanh(u) = 1 - 2 / (e^2u + 1), 2u clamped to [-20, 20] (see gelu_avx512.cpp).
inline __m256 gelu_tanh(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(set1(kSqrt2OverPi), _mm256_fmadd_ps(set1(kGeluCoeff), x3, x));
  const __m256 u2 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(u, u), set1(-20.0f)), set1(20.0f));
  const __m256 d = _mm256_add_ps(exp_bounded(u2), set1(1.0f));
  return _mm256_sub_ps(set1(1.0f), _mm256_div_ps(set1(2.0f), d));
}

inline __m256 gelu8(__m256 x) {
  const __m256 t = gelu_tanh(x);
  return _mm256_mul_ps(_mm256_mul_ps(set1(0.5f), x), _mm256_add_ps(set1(1.0f), t));
}

inline __m256 dgelu8(__m256 dy, __m256 x) {
  const __m256 t = gelu_tanh(x), one = set1(1.0f), half = set1(0.5f);
  const __m256 du =
      _mm256_mul_ps(set1(kSqrt2OverPi), _mm256_fmadd_ps(set1(3.0f * kGeluCoeff), _mm256_mul_ps(x, x), one));
  const __m256 left = _mm256_mul_ps(half, _mm256_add_ps(one, t));
  const __m256 right = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_fnmadd_ps(t, t, one)), du);
  return _mm256_mul_ps(dy, _mm256_add_ps(left, right));
}

inline __m256i lanes(int64_t n) {
  const int c = n >= 8 ? 8 : int(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace

void gelu_forward(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = lanes(n - i);
    _mm256_maskstore_ps(y + i, m, gelu8(_mm256_maskload_ps(x + i, m)));
  }
}

void gelu_backward(const float* dy, const float* x, float* dx, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dx + i, dgelu8(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = lanes(n - i);
    _mm256_maskstore_ps(dx + i, m, dgelu8(_mm256_maskload_ps(dy + i, m), _mm256_maskload_ps(x + i, m)));
  }
}

}  // namespace mt::cpu::avx2
