// Causal attention of one (batch, head) with AVX-512, flash-style in blocks of kB queries x kB
// keys (the math is attention.cpp's; see there and attention.h).
//
// Scores are computed transposed, S^T = scale K_j Q_i^T ([keys, queries]), so that the online
// softmax runs down the columns: 16 queries per register, a running max and sum per lane, no
// horizontal reductions. The block products go straight to the GEMM micro-kernel
// (sgemm_avx512.h's gemm_block) on operands packed once per head (K_j, V_j in every layout the
// products need) or once per query block (Q_i, dO_i), instead of a full sgemm per block that
// re-packed both operands every time; only the per-block P and dS are packed per product.
//   forward, per query block i and key blocks j <= i:
//     S^T = scale K_j Q_i^T; m' = max(m, colmax S^T); P^T = e^(S^T - m'); l = l e^(m - m') + colsum P^T;
//     O_i = O_i e^(m - m') + (P Z) V_j; finally O_i /= l, lse = m + log l.
//   backward, per block pair: S^T as above, P^T = e^(S^T - lse), dP^T = V_j dO_i^T,
//     dV_j += (P Z)^T dO_i, dS^T = scale P^T (dP^T Z - D), dQ_i += dS K_j, dK_j += dS^T Q_i.
// The blocks are walked in a fixed order by one thread, so results do not depend on threads.
// The block loop itself is attention_block_loop.h's, shared with attention_avx2.cpp; this file
// has the AVX-512 steps it calls.
// Built with AVX-512 flags, with sgemm_avx512.cpp's rules (no C++ library templates, internal
// linkage but for the entry points).
#include "kernels/cpu/attention_avx512.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention_block_loop.h"
#include "kernels/cpu/exp_avx512.h"
#include "kernels/cpu/sgemm_avx512.h"

namespace mt::cpu::avx512 {
namespace {

using attention_blocks::kB;

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// Lanes of the 16 queries i = i0 + c0 + lane whose key j is causal (j <= i), within `valid`.
inline __mmask16 causal(__m512i query, int64_t j, __mmask16 valid) {
  return _mm512_mask_cmp_epi32_mask(valid, query, _mm512_set1_epi32(int(j)), _MM_CMPINT_GE);
}

inline __m512i queries(int64_t first) {
  return _mm512_add_epi32(_mm512_set1_epi32(int(first)),
                          _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

// x . y over n floats, in 16 lanes added in a fixed order.
inline float dot(const float* x, const float* y, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 m = lanes(n - c);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + c), _mm512_maskz_loadu_ps(m, y + c), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// x[0..n) = 0.
inline void zero_row(float* x, int64_t n) {
  for (int64_t c = 0; c < n; c += 16) _mm512_mask_storeu_ps(x + c, lanes(n - c), _mm512_setzero_ps());
}

// x[0..n) *= f.
inline void scale_row(float* x, int64_t n, float f) {
  const __m512 vf = _mm512_set1_ps(f);
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 m = lanes(n - c);
    _mm512_mask_storeu_ps(x + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + c), vf));
  }
}

// The forward's online softmax on one block of S^T (nk keys x mq queries, row stride kB) for
// queries i0.. and keys j0..: updates m, l, writes corr = e^(m - m') and P^T Z over S^T.
void softmax_block(float* st, const float* zt, int64_t i0, int64_t mq, int64_t j0, int64_t nk, float* m, float* l,
                   float* corr) {
  const bool masked = j0 + nk - 1 > i0;  // some key after some query: only the diagonal block
  for (int64_t c0 = 0; c0 < mq; c0 += 16) {
    const __mmask16 cm = lanes(mq - c0);
    const __m512i qi = queries(i0 + c0);
    const __m512 m_old = _mm512_maskz_loadu_ps(cm, m + c0);
    __m512 mx = m_old;
    for (int64_t jj = 0; jj < nk; ++jj) {
      const __mmask16 ok = masked ? causal(qi, j0 + jj, cm) : cm;
      mx = _mm512_mask_max_ps(mx, ok, mx, _mm512_maskz_loadu_ps(cm, st + jj * kB + c0));
    }
    const __m512 co = exp16(_mm512_sub_ps(m_old, mx));  // 0 on the first block (m = -inf)
    __m512 sum = _mm512_setzero_ps();
    for (int64_t jj = 0; jj < nk; ++jj) {
      const __mmask16 ok = masked ? causal(qi, j0 + jj, cm) : cm;
      float* row = st + jj * kB + c0;
      __m512 p = _mm512_maskz_mov_ps(ok, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(cm, row), mx)));
      sum = _mm512_add_ps(sum, p);
      if (zt) p = _mm512_mul_ps(p, _mm512_maskz_loadu_ps(cm, zt + jj * kB + c0));
      _mm512_mask_storeu_ps(row, cm, p);
    }
    _mm512_mask_storeu_ps(l + c0, cm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(cm, l + c0), co, sum));
    _mm512_mask_storeu_ps(m + c0, cm, mx);
    _mm512_mask_storeu_ps(corr + c0, cm, co);
  }
}

// The backward's elementwise step on one block: P^T = e^(S^T - lse) (0 where masked), then
// S^T := P^T Z (for dV) and dP^T := scale P^T (dP^T Z - delta) (dS^T, for dQ and dK).
void dsoftmax_block(float* st, float* dpt, const float* zt, const float* lse, const float* delta, float scale,
                    int64_t i0, int64_t mq, int64_t j0, int64_t nk) {
  const bool masked = j0 + nk - 1 > i0;
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t c0 = 0; c0 < mq; c0 += 16) {
    const __mmask16 cm = lanes(mq - c0);
    const __m512i qi = queries(i0 + c0);
    const __m512 lv = _mm512_maskz_loadu_ps(cm, lse + i0 + c0), dv = _mm512_maskz_loadu_ps(cm, delta + i0 + c0);
    for (int64_t jj = 0; jj < nk; ++jj) {
      const __mmask16 ok = masked ? causal(qi, j0 + jj, cm) : cm;
      float *srow = st + jj * kB + c0, *drow = dpt + jj * kB + c0;
      const __m512 p = _mm512_maskz_mov_ps(ok, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(cm, srow), lv)));
      __m512 dp = _mm512_maskz_loadu_ps(cm, drow), pz = p;
      if (zt) {
        const __m512 z = _mm512_maskz_loadu_ps(cm, zt + jj * kB + c0);
        pz = _mm512_mul_ps(p, z);
        dp = _mm512_mul_ps(dp, z);
      }
      _mm512_mask_storeu_ps(srow, cm, pz);
      _mm512_mask_storeu_ps(drow, cm, _mm512_mul_ps(_mm512_mul_ps(vscale, p), _mm512_sub_ps(dp, dv)));
    }
  }
}


// This path's pieces for attention_block_loop.h.
struct Path {
  static constexpr auto panel_floats = &avx512::panel_floats;
  static constexpr auto strip_floats = &avx512::strip_floats;
  static constexpr auto pack_panels = &avx512::pack_panels;
  static constexpr auto pack_strips = &avx512::pack_strips;
  static constexpr auto gemm_block = &avx512::gemm_block;
  static constexpr auto softmax_block = &avx512::softmax_block;
  static constexpr auto dsoftmax_block = &avx512::dsoftmax_block;
  static constexpr auto dot = &avx512::dot;
  static constexpr auto zero_row = &avx512::zero_row;
  static constexpr auto scale_row = &avx512::scale_row;
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

}  // namespace mt::cpu::avx512
