// Causal attention of one (batch, head) with AVX2 + FMA: attention_avx512.cpp's algorithm (see
// there and attention.cpp for the math), the scores transposed so that the online softmax runs
// down the columns, 8 queries per register; the block products on sgemm_avx2.h's micro-kernel
// with operands packed once per head or query block. The block loop is attention_block_loop.h's
// (shared with attention_avx512.cpp) on this path's packing and kernel; here are its softmax
// steps in 8 lanes, with the causal and tail masks as lane masks (AVX2 has no mask registers).
// Built with -mavx2 -mfma, with sgemm_avx2.cpp's rules.
#include "kernels/cpu/attention_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention_block_loop.h"
#include "kernels/cpu/exp_avx2.h"
#include "kernels/cpu/sgemm_avx2.h"

namespace mt::cpu::avx2 {
namespace {

using attention_blocks::kB;

// Lanes < n all ones (n <= 0: none).
inline __m256i lanes(int64_t n) {
  const int c = n >= 8 ? 8 : (n < 0 ? 0 : int(n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 as_ps(__m256i m) { return _mm256_castsi256_ps(m); }

// 8 floats of a row, all lanes (kFull) or those in m (the others read as 0, not written). Only a
// row's tail takes the masked forms: vmaskmovps is slow, its store most of all (microcoded on
// AMD), and used on every vector it was most of this file's own time in a profile. Both forms give
// the same values in the lanes that count, so results do not change.
template <bool kFull>
inline __m256 load(const float* p, __m256i m) {
  return kFull ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}
template <bool kFull>
inline void store(float* p, __m256i m, __m256 v) {
  if (kFull) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, m, v);
  }
}

// Lanes of the 8 queries i = first + lane (query) whose key j is causal (j <= i), within `valid`.
inline __m256i causal(__m256i query, int64_t j, __m256i valid) {
  return _mm256_and_si256(valid, _mm256_cmpgt_epi32(query, _mm256_set1_epi32(int(j) - 1)));
}

inline __m256i queries(int64_t first) {
  return _mm256_add_epi32(_mm256_set1_epi32(int(first)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// x . y over n floats, in 8 lanes added in a fixed order.
inline float dot(const float* x, const float* y, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c), acc);
  if (c < n) {
    const __m256i m = lanes(n - c);
    acc = _mm256_fmadd_ps(load<false>(x + c, m), load<false>(y + c, m), acc);
  }
  alignas(32) float part[8];
  _mm256_store_ps(part, acc);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// x[0..n) = 0.
inline void zero_row(float* x, int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) _mm256_storeu_ps(x + c, _mm256_setzero_ps());
  if (c < n) store<false>(x + c, lanes(n - c), _mm256_setzero_ps());
}

// x[0..n) *= f.
inline void scale_row(float* x, int64_t n, float f) {
  const __m256 vf = _mm256_set1_ps(f);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) _mm256_storeu_ps(x + c, _mm256_mul_ps(_mm256_loadu_ps(x + c), vf));
  if (c < n) {
    const __m256i m = lanes(n - c);
    store<false>(x + c, m, _mm256_mul_ps(load<false>(x + c, m), vf));
  }
}

// softmax_block on the 8 queries i0 + c0 .. (all in the block: kFull, else those in cm). On a
// block below the diagonal (!kMasked) every lane sees every key, so the causal selects drop out.
template <bool kFull, bool kMasked>
inline void softmax_cols(float* st, const float* zt, int64_t i0, int64_t c0, __m256i cm, int64_t j0, int64_t nk,
                         float* m, float* l, float* corr) {
  const __m256i qi = queries(i0 + c0);
  const __m256 m_old = load<kFull>(m + c0, cm);
  __m256 mx = m_old;
  for (int64_t jj = 0; jj < nk; ++jj) {
    const __m256 s = load<kFull>(st + jj * kB + c0, cm);
    mx = kMasked ? _mm256_blendv_ps(mx, _mm256_max_ps(mx, s), as_ps(causal(qi, j0 + jj, cm))) : _mm256_max_ps(mx, s);
  }
  const __m256 co = exp8(_mm256_sub_ps(m_old, mx));  // 0 on the first block (m = -inf)
  __m256 sum = _mm256_setzero_ps();
  for (int64_t jj = 0; jj < nk; ++jj) {
    float* row = st + jj * kB + c0;
    __m256 p = exp8(_mm256_sub_ps(load<kFull>(row, cm), mx));
    if (kMasked) p = _mm256_and_ps(p, as_ps(causal(qi, j0 + jj, cm)));
    sum = _mm256_add_ps(sum, p);
    if (zt) p = _mm256_mul_ps(p, load<kFull>(zt + jj * kB + c0, cm));
    store<kFull>(row, cm, p);
  }
  store<kFull>(l + c0, cm, _mm256_fmadd_ps(load<kFull>(l + c0, cm), co, sum));
  store<kFull>(m + c0, cm, mx);
  store<kFull>(corr + c0, cm, co);
}

// The forward's online softmax on one block of S^T (nk keys x mq queries, row stride kB) for
// queries i0.. and keys j0..: updates m, l, writes corr = e^(m - m') and P^T Z over S^T.
void softmax_block(float* st, const float* zt, int64_t i0, int64_t mq, int64_t j0, int64_t nk, float* m, float* l,
                   float* corr) {
  const bool masked = j0 + nk - 1 > i0;  // some key after some query: only the diagonal block
  for (int64_t c0 = 0; c0 < mq; c0 += 8) {
    const __m256i cm = lanes(mq - c0);
    if (c0 + 8 <= mq) {
      masked ? softmax_cols<true, true>(st, zt, i0, c0, cm, j0, nk, m, l, corr)
             : softmax_cols<true, false>(st, zt, i0, c0, cm, j0, nk, m, l, corr);
    } else {
      softmax_cols<false, true>(st, zt, i0, c0, cm, j0, nk, m, l, corr);
    }
  }
}

// dsoftmax_block on the 8 queries i0 + c0 .. (kFull and kMasked as in softmax_cols).
template <bool kFull, bool kMasked>
inline void dsoftmax_cols(float* st, float* dpt, const float* zt, const float* lse, const float* delta, __m256 vscale,
                          int64_t i0, int64_t c0, __m256i cm, int64_t j0, int64_t nk) {
  const __m256i qi = queries(i0 + c0);
  const __m256 lv = load<kFull>(lse + i0 + c0, cm), dv = load<kFull>(delta + i0 + c0, cm);
  for (int64_t jj = 0; jj < nk; ++jj) {
    float *srow = st + jj * kB + c0, *drow = dpt + jj * kB + c0;
    __m256 p = exp8(_mm256_sub_ps(load<kFull>(srow, cm), lv));
    if (kMasked) p = _mm256_and_ps(p, as_ps(causal(qi, j0 + jj, cm)));
    __m256 dp = load<kFull>(drow, cm), pz = p;
    if (zt) {
      const __m256 z = load<kFull>(zt + jj * kB + c0, cm);
      pz = _mm256_mul_ps(p, z);
      dp = _mm256_mul_ps(dp, z);
    }
    store<kFull>(srow, cm, pz);
    store<kFull>(drow, cm, _mm256_mul_ps(_mm256_mul_ps(vscale, p), _mm256_sub_ps(dp, dv)));
  }
}

// The backward's elementwise step on one block: P^T = e^(S^T - lse) (0 where masked), then
// S^T := P^T Z (for dV) and dP^T := scale P^T (dP^T Z - delta) (dS^T, for dQ and dK).
void dsoftmax_block(float* st, float* dpt, const float* zt, const float* lse, const float* delta, float scale,
                    int64_t i0, int64_t mq, int64_t j0, int64_t nk) {
  const bool masked = j0 + nk - 1 > i0;
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int64_t c0 = 0; c0 < mq; c0 += 8) {
    const __m256i cm = lanes(mq - c0);
    if (c0 + 8 <= mq) {
      masked ? dsoftmax_cols<true, true>(st, dpt, zt, lse, delta, vscale, i0, c0, cm, j0, nk)
             : dsoftmax_cols<true, false>(st, dpt, zt, lse, delta, vscale, i0, c0, cm, j0, nk);
    } else {
      dsoftmax_cols<false, true>(st, dpt, zt, lse, delta, vscale, i0, c0, cm, j0, nk);
    }
  }
}

// This path's pieces for attention_block_loop.h.
struct Path {
  static constexpr auto panel_floats = &avx2::panel_floats;
  static constexpr auto strip_floats = &avx2::strip_floats;
  static constexpr auto pack_panels = &avx2::pack_panels;
  static constexpr auto pack_strips = &avx2::pack_strips;
  static constexpr auto gemm_block = &avx2::gemm_block;
  static constexpr auto softmax_block = &avx2::softmax_block;
  static constexpr auto dsoftmax_block = &avx2::dsoftmax_block;
  static constexpr auto dot = &avx2::dot;
  static constexpr auto zero_row = &avx2::zero_row;
  static constexpr auto scale_row = &avx2::scale_row;
};

}  // namespace

int64_t attention_forward_scratch(int64_t T, int64_t D) { return attention_blocks::forward_scratch<Path>(T, D); }
int64_t attention_backward_scratch(int64_t T, int64_t D) { return attention_blocks::backward_scratch<Path>(T, D); }

void attention_forward(const AttentionHead& h, const float* q, const float* k, const float* v, float* o, float* lse,
                       float* scratch) {
  attention_blocks::forward<Path>(h, q, k, v, o, lse, scratch);
}

void attention_backward(const AttentionHead& h, const float* q, const float* k, const float* v, const float* o,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv, float* scratch) {
  attention_blocks::backward<Path>(h, q, k, v, o, dout, lse, dq, dk, dv, scratch);
}

}  // namespace mt::cpu::avx2
