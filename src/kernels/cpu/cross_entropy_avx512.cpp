// One row of softmax cross-entropy with AVX-512 (cross_entropy_avx512.h): three passes over the
// row, which stays in L1/L2 (16 KiB at vocab 4096): the max, the sum of e^(x - max) in 16 lanes
// (added across lanes in a fixed order), and with a gradient e^(x - lse) scaled by w. Built with
// AVX-512 flags, with sgemm_avx512.cpp's rules.
#include "kernels/cpu/cross_entropy_avx512.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx512.h"

namespace mt::cpu::avx512 {
namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

}  // namespace

float xent_row(const float* x, int64_t vocab, int64_t target, float w, float* g) {
  // The lowest float, not -inf, starts the max: a row of -inf logits then sums e^-inf = 0.
  __m512 vm = _mm512_set1_ps(-3.40282347e+38f);
  for (int64_t v = 0; v < vocab; v += 16) {
    const __mmask16 m = lanes(vocab - v);
    vm = _mm512_mask_max_ps(vm, m, vm, _mm512_maskz_loadu_ps(m, x + v));
  }
  const float mx = _mm512_reduce_max_ps(vm);
  const __m512 shift = _mm512_set1_ps(mx);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t v = 0; v < vocab; v += 16) {
    const __mmask16 m = lanes(vocab - v);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + v), shift))));
  }
  alignas(64) float part[16];
  _mm512_store_ps(part, sum);
  float s = 0.0f;
  for (int i = 0; i < 16; ++i) s += part[i];
  const float lse = mx + __builtin_logf(s);
  if (!g) return lse;
  const __m512 vlse = _mm512_set1_ps(lse), vw = _mm512_set1_ps(w);
  for (int64_t v = 0; v < vocab; v += 16) {
    const __mmask16 m = lanes(vocab - v);
    const __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + v), vlse));
    _mm512_mask_storeu_ps(g + v, m, _mm512_mul_ps(vw, p));
  }
  g[target] -= w;
  return lse;
}

}  // namespace mt::cpu::avx512
