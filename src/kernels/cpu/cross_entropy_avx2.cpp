// One row of softmax cross-entropy with AVX2 + FMA (cross_entropy_avx2.h): cross_entropy_avx512
// .cpp's three passes (the max, the sum of e^(x - max) in 8 lanes added across lanes in a fixed
// order, the gradient e^(x - lse) scaled by w), a short tail under a mask. Built with -mavx2
// -mfma, with sgemm_avx2.cpp's rules.
#include "kernels/cpu/cross_entropy_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx2.h"

namespace mt::cpu::avx2 {
namespace {

inline __m256i lanes(int64_t n) {
  const int c = n >= 8 ? 8 : int(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace

float xent_row(const float* x, int64_t vocab, int64_t target, float w, float* g) {
  // The lowest float, not -inf, starts the max: a row of -inf logits then sums e^-inf = 0.
  const __m256 lowest = _mm256_set1_ps(-3.40282347e+38f);
  const int64_t full = vocab / 8 * 8;
  const __m256i tail = lanes(vocab - full);
  __m256 vm = lowest;
  for (int64_t v = 0; v < full; v += 8) vm = _mm256_max_ps(_mm256_loadu_ps(x + v), vm);
  if (full < vocab) vm = _mm256_max_ps(_mm256_blendv_ps(lowest, _mm256_maskload_ps(x + full, tail),
                                                        _mm256_castsi256_ps(tail)), vm);
  alignas(32) float part[8];
  _mm256_store_ps(part, vm);
  float mx = part[0];
  for (int i = 1; i < 8; ++i) mx = part[i] > mx ? part[i] : mx;
  const __m256 shift = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t v = 0; v < full; v += 8) sum = _mm256_add_ps(sum, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + v), shift)));
  if (full < vocab)
    sum = _mm256_add_ps(sum, _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + full, tail), shift)),
                                           _mm256_castsi256_ps(tail)));
  _mm256_store_ps(part, sum);
  const float s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  const float lse = mx + __builtin_logf(s);
  if (!g) return lse;
  const __m256 vlse = _mm256_set1_ps(lse), vw = _mm256_set1_ps(w);
  for (int64_t v = 0; v < full; v += 8)
    _mm256_storeu_ps(g + v, _mm256_mul_ps(vw, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + v), vlse))));
  if (full < vocab)
    _mm256_maskstore_ps(g + full, tail, _mm256_mul_ps(vw, exp8(_mm256_sub_ps(_mm256_maskload_ps(x + full, tail), vlse))));
  g[target] -= w;
  return lse;
}

}  // namespace mt::cpu::avx2
