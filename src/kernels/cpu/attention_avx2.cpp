// Causal attention of one (batch, head) with AVX2 + FMA: attention_avx512.cpp's algorithm (see
// there and attention.cpp for the math), the scores transposed so that the online softmax runs
// down the columns, 8 queries per register; the block products on sgemm_avx2.h's micro-kernel
// with operands packed once per head or query block. The block loop is attention_avx512.cpp's,
// line for line, on this path's packing and kernel; the softmax steps are written in 8 lanes,
// with the causal and tail masks as lane masks (AVX2 has no mask registers).
// Built with -mavx2 -mfma, with sgemm_avx2.cpp's rules.
#include "kernels/cpu/attention_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/exp_avx2.h"
#include "kernels/cpu/sgemm_avx2.h"

namespace mt::cpu::avx2 {
namespace {

constexpr int64_t kB = 64;  // queries and keys per block: a multiple of 16, so Q strips line up

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t round16(int64_t n) { return div_up(n, 16) * 16; }  // keeps carved pieces 64-byte aligned
// Lanes < n all ones (n <= 0: none).
inline __m256i lanes(int64_t n) {
  const int c = n >= 8 ? 8 : (n < 0 ? 0 : int(n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 as_ps(__m256i m) { return _mm256_castsi256_ps(m); }
inline __m256 load(const float* p, __m256i m) { return _mm256_maskload_ps(p, m); }
inline void store(float* p, __m256i m, __m256 v) { _mm256_maskstore_ps(p, m, v); }

// Carves the scratch into pieces; with base = null it only counts.
struct Carver {
  float* base;
  int64_t used = 0;
  float* take(int64_t n) {
    float* p = base ? base + used : nullptr;
    used += round16(n);
    return p;
  }
};

struct ForwardScratch {
  float *kpan, *vstr, *qstr, *st, *zt, *ppan, *m, *l, *corr;
  int64_t kpan_stride, vstr_stride;
  ForwardScratch(Carver& c, int64_t T, int64_t D) {
    const int64_t nb = div_up(T, kB);
    kpan_stride = round16(panel_floats(kB, D));
    vstr_stride = round16(strip_floats(kB, D));
    kpan = c.take(nb * kpan_stride);
    vstr = c.take(nb * vstr_stride);
    qstr = c.take(strip_floats(D, kB));
    st = c.take(kB * kB);
    zt = c.take(kB * kB);
    ppan = c.take(panel_floats(kB, kB));
    m = c.take(kB);
    l = c.take(kB);
    corr = c.take(kB);
  }
};

struct BackwardScratch {
  float *kpan, *vpan, *kstr, *qstr, *dostr, *qrow, *dorow, *st, *dpt, *zt, *apan, *delta;
  int64_t pan_stride, str_stride;
  BackwardScratch(Carver& c, int64_t T, int64_t D) {
    const int64_t nb = div_up(T, kB);
    pan_stride = round16(panel_floats(kB, D));
    str_stride = round16(strip_floats(kB, D));
    kpan = c.take(nb * pan_stride);
    vpan = c.take(nb * pan_stride);
    kstr = c.take(nb * str_stride);
    qstr = c.take(strip_floats(D, kB));
    dostr = c.take(strip_floats(D, kB));
    qrow = c.take(strip_floats(kB, D));
    dorow = c.take(strip_floats(kB, D));
    st = c.take(kB * kB);
    dpt = c.take(kB * kB);
    zt = c.take(kB * kB);
    apan = c.take(panel_floats(kB, kB));
    delta = c.take(T);
  }
};

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
  for (int64_t c = 0; c < n; c += 8) {
    const __m256i m = lanes(n - c);
    acc = _mm256_fmadd_ps(load(x + c, m), load(y + c, m), acc);
  }
  alignas(32) float part[8];
  _mm256_store_ps(part, acc);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// x[0..n) = 0.
inline void zero_row(float* x, int64_t n) {
  for (int64_t c = 0; c < n; c += 8) store(x + c, lanes(n - c), _mm256_setzero_ps());
}

// x[0..n) *= f.
inline void scale_row(float* x, int64_t n, float f) {
  const __m256 vf = _mm256_set1_ps(f);
  for (int64_t c = 0; c < n; c += 8) {
    const __m256i m = lanes(n - c);
    store(x + c, m, _mm256_mul_ps(load(x + c, m), vf));
  }
}

// The forward's online softmax on one block of S^T (nk keys x mq queries, row stride kB) for
// queries i0.. and keys j0..: updates m, l, writes corr = e^(m - m') and P^T Z over S^T.
void softmax_block(float* st, const float* zt, int64_t i0, int64_t mq, int64_t j0, int64_t nk, float* m, float* l,
                   float* corr) {
  const bool masked = j0 + nk - 1 > i0;  // some key after some query: only the diagonal block
  for (int64_t c0 = 0; c0 < mq; c0 += 8) {
    const __m256i cm = lanes(mq - c0);
    const __m256i qi = queries(i0 + c0);
    const __m256 m_old = load(m + c0, cm);
    __m256 mx = m_old;
    for (int64_t jj = 0; jj < nk; ++jj) {
      const __m256i ok = masked ? causal(qi, j0 + jj, cm) : cm;
      mx = _mm256_blendv_ps(mx, _mm256_max_ps(mx, load(st + jj * kB + c0, cm)), as_ps(ok));
    }
    const __m256 co = exp8(_mm256_sub_ps(m_old, mx));  // 0 on the first block (m = -inf)
    __m256 sum = _mm256_setzero_ps();
    for (int64_t jj = 0; jj < nk; ++jj) {
      const __m256i ok = masked ? causal(qi, j0 + jj, cm) : cm;
      float* row = st + jj * kB + c0;
      __m256 p = _mm256_and_ps(exp8(_mm256_sub_ps(load(row, cm), mx)), as_ps(ok));
      sum = _mm256_add_ps(sum, p);
      if (zt) p = _mm256_mul_ps(p, load(zt + jj * kB + c0, cm));
      store(row, cm, p);
    }
    store(l + c0, cm, _mm256_fmadd_ps(load(l + c0, cm), co, sum));
    store(m + c0, cm, mx);
    store(corr + c0, cm, co);
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
    const __m256i qi = queries(i0 + c0);
    const __m256 lv = load(lse + i0 + c0, cm), dv = load(delta + i0 + c0, cm);
    for (int64_t jj = 0; jj < nk; ++jj) {
      const __m256i ok = masked ? causal(qi, j0 + jj, cm) : cm;
      float *srow = st + jj * kB + c0, *drow = dpt + jj * kB + c0;
      const __m256 p = _mm256_and_ps(exp8(_mm256_sub_ps(load(srow, cm), lv)), as_ps(ok));
      __m256 dp = load(drow, cm), pz = p;
      if (zt) {
        const __m256 z = load(zt + jj * kB + c0, cm);
        pz = _mm256_mul_ps(p, z);
        dp = _mm256_mul_ps(dp, z);
      }
      store(srow, cm, pz);
      store(drow, cm, _mm256_mul_ps(_mm256_mul_ps(vscale, p), _mm256_sub_ps(dp, dv)));
    }
  }
}

}  // namespace

int64_t attention_forward_scratch(int64_t T, int64_t D) {
  Carver c{nullptr};
  ForwardScratch s(c, T, D);
  return c.used;
}

int64_t attention_backward_scratch(int64_t T, int64_t D) {
  Carver c{nullptr};
  BackwardScratch s(c, T, D);
  return c.used;
}

void attention_forward(const AttentionHead& h, const float* q, const float* k, const float* v, float* o, float* lse,
                       float* scratch) {
  const int64_t T = h.T, D = h.D;
  Carver carver{scratch};
  ForwardScratch s(carver, T, D);
  for (int64_t j0 = 0; j0 < T; j0 += kB) {  // K_j as the A of S^T, V_j as the B of P V_j
    const int64_t nk = min64(kB, T - j0);
    pack_panels(false, k + j0 * D, D, nk, D, s.kpan + (j0 / kB) * s.kpan_stride);
    pack_strips(false, v + j0 * D, D, nk, D, s.vstr + (j0 / kB) * s.vstr_stride);
  }
  for (int64_t i0 = 0; i0 < T; i0 += kB) {
    const int64_t mq = min64(kB, T - i0);
    float* oi = o + i0 * D;
    pack_strips(true, q + i0 * D, D, D, mq, s.qstr);  // Q_i^T as the B of S^T
    for (int64_t r = 0; r < mq; ++r) {
      s.m[r] = -__builtin_inff();
      s.l[r] = 0.0f;
      zero_row(oi + r * D, D);
    }
    for (int64_t j0 = 0; j0 <= i0; j0 += kB) {
      const int64_t nk = min64(kB, T - j0);
      gemm_block(D, s.kpan + (j0 / kB) * s.kpan_stride, nk, s.qstr, mq, h.scale, 0.0f, s.st, kB);
      if (h.dropout) h.dropout(h.dropout_ctx, i0, mq, j0, nk, s.zt, kB);
      softmax_block(s.st, h.dropout ? s.zt : nullptr, i0, mq, j0, nk, s.m, s.l, s.corr);
      for (int64_t r = 0; r < mq; ++r) scale_row(oi + r * D, D, s.corr[r]);
      pack_panels(true, s.st, kB, mq, nk, s.ppan);  // P = (P^T)^T as the A of P V_j
      gemm_block(nk, s.ppan, mq, s.vstr + (j0 / kB) * s.vstr_stride, D, 1.0f, 1.0f, oi, D);
    }
    for (int64_t r = 0; r < mq; ++r) {
      scale_row(oi + r * D, D, 1.0f / s.l[r]);
      lse[i0 + r] = s.m[r] + __builtin_logf(s.l[r]);
    }
  }
}

void attention_backward(const AttentionHead& h, const float* q, const float* k, const float* v, const float* o,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv, float* scratch) {
  const int64_t T = h.T, D = h.D;
  Carver carver{scratch};
  BackwardScratch s(carver, T, D);
  for (int64_t t = 0; t < T; ++t) {
    s.delta[t] = dot(dout + t * D, o + t * D, D);  // D_i = dO_i . O_i
    zero_row(dq + t * D, D);
    zero_row(dk + t * D, D);
    zero_row(dv + t * D, D);
  }
  for (int64_t j0 = 0; j0 < T; j0 += kB) {
    const int64_t nk = min64(kB, T - j0), jb = j0 / kB;
    pack_panels(false, k + j0 * D, D, nk, D, s.kpan + jb * s.pan_stride);  // A of S^T
    pack_panels(false, v + j0 * D, D, nk, D, s.vpan + jb * s.pan_stride);  // A of dP^T
    pack_strips(false, k + j0 * D, D, nk, D, s.kstr + jb * s.str_stride);  // B of dS K_j
  }
  for (int64_t i0 = 0; i0 < T; i0 += kB) {
    const int64_t mq = min64(kB, T - i0);
    pack_strips(true, q + i0 * D, D, D, mq, s.qstr);       // B of S^T
    pack_strips(true, dout + i0 * D, D, D, mq, s.dostr);   // B of dP^T
    pack_strips(false, q + i0 * D, D, mq, D, s.qrow);      // B of dS^T Q_i
    pack_strips(false, dout + i0 * D, D, mq, D, s.dorow);  // B of (P Z)^T dO_i
    for (int64_t j0 = 0; j0 <= i0; j0 += kB) {
      const int64_t nk = min64(kB, T - j0), jb = j0 / kB;
      gemm_block(D, s.kpan + jb * s.pan_stride, nk, s.qstr, mq, h.scale, 0.0f, s.st, kB);
      gemm_block(D, s.vpan + jb * s.pan_stride, nk, s.dostr, mq, 1.0f, 0.0f, s.dpt, kB);
      if (h.dropout) h.dropout(h.dropout_ctx, i0, mq, j0, nk, s.zt, kB);
      dsoftmax_block(s.st, s.dpt, h.dropout ? s.zt : nullptr, lse, s.delta, h.scale, i0, mq, j0, nk);
      pack_panels(false, s.st, kB, nk, mq, s.apan);  // (P Z)^T
      gemm_block(mq, s.apan, nk, s.dorow, D, 1.0f, 1.0f, dv + j0 * D, D);
      pack_panels(true, s.dpt, kB, mq, nk, s.apan);  // dS
      gemm_block(nk, s.apan, mq, s.kstr + jb * s.str_stride, D, 1.0f, 1.0f, dq + i0 * D, D);
      pack_panels(false, s.dpt, kB, nk, mq, s.apan);  // dS^T
      gemm_block(mq, s.apan, nk, s.qrow, D, 1.0f, 1.0f, dk + j0 * D, D);
    }
  }
}

}  // namespace mt::cpu::avx2
