#pragma once
// e^x on 16 fp32 lanes, for the *_avx512.cpp files only (it needs their AVX-512 flags). `static`:
// each of those files gets its own copy, so the linker can never hand an AVX-512 body to code
// built for the baseline.
//   fast_math.h's exp4 algorithm (Cody-Waite reduction x = k ln2 + r, Cephes' degree-6
//   polynomial for e^r), with 2^k applied by vscalefps, which gets subnormal results right by
//   itself: within 2 ulp of expf.
#include <immintrin.h>

namespace mt::cpu::avx512 {

// e^y for y well inside the finite range (no range checks): Cody-Waite reduction, the
// polynomial, 2^k by vscalefps.
static inline __m512 exp_bounded(__m512 y) {
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f),
                                    _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), y));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

// e^x; e^x = 0 below -104 (under the smallest subnormal), inf above 88.72, NaN stays NaN.
static inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-104.0f), hi = _mm512_set1_ps(88.72f);
  __m512 y = exp_bounded(_mm512_min_ps(_mm512_max_ps(x, lo), hi));
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), y, _mm512_setzero_ps());
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), y, _mm512_set1_ps(__builtin_inff()));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

}  // namespace mt::cpu::avx512
