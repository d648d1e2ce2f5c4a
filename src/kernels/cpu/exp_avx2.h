#pragma once
// e^x on 8 fp32 lanes, for the *_avx2.cpp files only (it needs their AVX2 + FMA flags); `static`
// for exp_avx512.h's reason. exp_avx512.h's algorithm (Cody-Waite reduction, Cephes' degree-6
// polynomial, FMAs in the same places); AVX2 has no vscalefps, so 2^k is built in the exponent
// field, as two factors in exp8 so that subnormal results come out right (fast_math.h's way):
// within 2 ulp of expf.
#include <immintrin.h>

namespace mt::cpu::avx2 {

// p(r) ~ e^r and k for y = k ln2 + r.
static inline __m256 exp_poly(__m256 y, __m256& k) {
  k = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f),
                                    _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), y));
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  return _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
}

// 2^k for integer-valued k in [-126, 127].
static inline __m256 pow2(__m256i k) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

// e^y for y in [-87, 88] (normal results; no range checks).
static inline __m256 exp_bounded(__m256 y) {
  __m256 k;
  const __m256 p = exp_poly(y, k);
  return _mm256_mul_ps(p, pow2(_mm256_cvtps_epi32(k)));
}

// e^x; 0 below -104 (under the smallest subnormal), inf above 88.72, NaN stays NaN.
static inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-104.0f), hi = _mm256_set1_ps(88.72f);
  __m256 k;
  const __m256 p = exp_poly(_mm256_min_ps(_mm256_max_ps(x, lo), hi), k);
  const __m256i ki = _mm256_cvtps_epi32(k), k1 = _mm256_srai_epi32(ki, 1);
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, pow2(k1)), pow2(_mm256_sub_epi32(ki, k1)));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

}  // namespace mt::cpu::avx2
