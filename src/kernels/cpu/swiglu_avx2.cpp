// SwiGLU with AVX2 + FMA (swiglu_avx2.h): swiglu.cpp's 4-lane arithmetic in 8 lanes, e^x as
// exp_avx2.h's, sigmoid(g) = 1 / (1 + e^-g) by a division (e^-g = inf below g = -88.7 gives 0).
// Built with -mavx2 -mfma, with sgemm_avx2.cpp's rules.
#include "kernels/cpu/swiglu_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx2.h"

namespace mt::cpu::avx2 {
namespace {

inline __m256 set1(float v) { return _mm256_set1_ps(v); }

inline __m256 sigmoid8(__m256 g) {
  return _mm256_div_ps(set1(1.0f), _mm256_add_ps(set1(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

inline __m256i lanes(int64_t n) {
  const int c = n >= 8 ? 8 : int(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline __m256 forward8(__m256 g, __m256 u) { return _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), u); }

inline void backward8(__m256 d, __m256 g, __m256 u, __m256& dg, __m256& du) {
  const __m256 s = sigmoid8(g), one = set1(1.0f);
  dg = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, u), s), _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one));
  du = _mm256_mul_ps(_mm256_mul_ps(d, g), s);
}

}  // namespace

void swiglu_forward(const float* gate, const float* up, float* y, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, forward8(_mm256_loadu_ps(gate + j), _mm256_loadu_ps(up + j)));
  if (j < n) {
    const __m256i m = lanes(n - j);
    _mm256_maskstore_ps(y + j, m, forward8(_mm256_maskload_ps(gate + j, m), _mm256_maskload_ps(up + j, m)));
  }
}

void swiglu_backward(const float* dy, const float* gate, const float* up, float* dgate, float* dup, int64_t n) {
  __m256 dg, du;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    backward8(_mm256_loadu_ps(dy + j), _mm256_loadu_ps(gate + j), _mm256_loadu_ps(up + j), dg, du);
    _mm256_storeu_ps(dgate + j, dg);
    _mm256_storeu_ps(dup + j, du);
  }
  if (j < n) {
    const __m256i m = lanes(n - j);
    backward8(_mm256_maskload_ps(dy + j, m), _mm256_maskload_ps(gate + j, m), _mm256_maskload_ps(up + j, m), dg, du);
    _mm256_maskstore_ps(dgate + j, m, dg);
    _mm256_maskstore_ps(dup + j, m, du);
  }
}

}  // namespace mt::cpu::avx2
