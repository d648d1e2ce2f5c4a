// GeLU with AVX2 + FMA (gelu_avx2.h): activation.cpp's tanh approximation, written with
// 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + e^v), v = -2u, which takes fewer instructions than
// gelu_avx512.cpp's 1 - 2 / (e^2u + 1) form (the instruction count per element is what limits
// this path, with half AVX-512's lanes per instruction):
//   s = 1 / (1 + e^v),  v = -2 sqrt(2/pi) x (1 + 0.044715 x^2)
//   gelu(x)  = x s
//   gelu'(x) = s (1 + x (1 - s) w),  1 - s = e^v s,  w = -dv/dx = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// (as 1 - tanh(u)^2 = 4 s (1 - s)); s has no cancellation, unlike 1 + tanh(u) for negative x.
// e^v is exp_avx2.h's on v clamped to [-20, 20]. Past the clamp the form saturates as the tanh
// form rounds: s = 0 above v = 20 (x below about -5.4, s < 2^-28), e^v = 0 below v = -20 in
// gelu' (there 1 - s < 2^-28). So gelu(-100) = -0 and gelu'(100) = 1 exactly, and the infinities
// give what the reference formula gives (gelu(-inf) = -inf * 0 = NaN); a NaN x stays NaN through
// the factor x. 1 / (1 + e^v) is a division: vrcpps is only 12 bits, and with the Newton steps it
// needs it is no faster here. A short tail runs the same code on a masked load, so each
// element's result depends on its inputs only. Built with -mavx2 -mfma, with sgemm_avx2.cpp's rules.
#include "kernels/cpu/gelu_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx2.h"

namespace mt::cpu::avx2 {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoeff = 0.044715f;
constexpr float kVMax = 20.0f;  // |v| past which s (v > 0) or 1 - s (v < 0) is under 2^-28

inline __m256 set1(float v) { return _mm256_set1_ps(v); }

// v = -2u for x and x2 = x^2.
inline __m256 minus_2u(__m256 x, __m256 x2) {
  return _mm256_mul_ps(x, _mm256_fmadd_ps(x2, set1(-2.0f * kSqrt2OverPi * kGeluCoeff), set1(-2.0f * kSqrt2OverPi)));
}

// e^v on v clamped to [-kVMax, kVMax].
inline __m256 exp_clamped(__m256 v) {
  return exp_bounded(_mm256_max_ps(_mm256_min_ps(v, set1(kVMax)), set1(-kVMax)));
}

// s = 1 / (1 + e), 0 where v > kVMax.
inline __m256 sigmoid(__m256 v, __m256 e) {
  const __m256 s = _mm256_div_ps(set1(1.0f), _mm256_add_ps(e, set1(1.0f)));
  return _mm256_andnot_ps(_mm256_cmp_ps(v, set1(kVMax), _CMP_GT_OQ), s);
}

inline __m256 gelu8(__m256 x) {
  const __m256 v = minus_2u(x, _mm256_mul_ps(x, x));
  return _mm256_mul_ps(x, sigmoid(v, exp_clamped(v)));
}

inline __m256 dgelu8(__m256 dy, __m256 x) {
  const __m256 x2 = _mm256_mul_ps(x, x), v = minus_2u(x, x2);
  __m256 e = exp_clamped(v);
  const __m256 s = sigmoid(v, e);
  e = _mm256_andnot_ps(_mm256_cmp_ps(v, set1(-kVMax), _CMP_LT_OQ), e);
  const __m256 w = _mm256_fmadd_ps(x2, set1(6.0f * kSqrt2OverPi * kGeluCoeff), set1(2.0f * kSqrt2OverPi));
  const __m256 x1s = _mm256_mul_ps(x, _mm256_mul_ps(e, s));  // x (1 - s)
  return _mm256_mul_ps(dy, _mm256_mul_ps(s, _mm256_fmadd_ps(x1s, w, set1(1.0f))));
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
