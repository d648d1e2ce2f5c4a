#pragma once
// The block loop of one causal attention head, flash-style in blocks of kB queries x kB keys,
// shared by attention_avx512.cpp and attention_avx2.cpp (the math and the why are in
// attention_avx512.cpp's opening comment). A template over the path P, which provides as static
// members the pieces of its GEMM (panel_floats, strip_floats, pack_panels, pack_strips,
// gemm_block: sgemm_avx512.h / sgemm_avx2.h) and its own elementwise steps (softmax_block,
// dsoftmax_block, dot, zero_row, scale_row). Everything here is at internal
// linkage (an unnamed namespace), so each of those two files compiles its own instance with its
// own flags: include it nowhere else.
#include <cstdint>

#include "kernels/cpu/attention_head.h"

namespace mt::cpu {
namespace {
namespace attention_blocks {

constexpr int64_t kB = 64;  // queries and keys per block: a multiple of both paths' strip widths (32, 16)

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t round16(int64_t n) { return div_up(n, 16) * 16; }  // keeps carved pieces 64-byte aligned

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

template <class P>
struct ForwardScratch {
  float *kpan, *vstr, *qstr, *st, *zt, *ppan, *m, *l, *corr;
  int64_t kpan_stride, vstr_stride;
  ForwardScratch(Carver& c, int64_t T, int64_t D) {
    const int64_t nb = div_up(T, kB);
    kpan_stride = round16(P::panel_floats(kB, D));
    vstr_stride = round16(P::strip_floats(kB, D));
    kpan = c.take(nb * kpan_stride);
    vstr = c.take(nb * vstr_stride);
    qstr = c.take(P::strip_floats(D, kB));
    st = c.take(kB * kB);
    zt = c.take(kB * kB);
    ppan = c.take(P::panel_floats(kB, kB));
    m = c.take(kB);
    l = c.take(kB);
    corr = c.take(kB);
  }
};

template <class P>
struct BackwardScratch {
  float *kpan, *vpan, *kstr, *qstr, *dostr, *qrow, *dorow, *st, *dpt, *zt, *apan, *delta;
  int64_t pan_stride, str_stride;
  BackwardScratch(Carver& c, int64_t T, int64_t D) {
    const int64_t nb = div_up(T, kB);
    pan_stride = round16(P::panel_floats(kB, D));
    str_stride = round16(P::strip_floats(kB, D));
    kpan = c.take(nb * pan_stride);
    vpan = c.take(nb * pan_stride);
    kstr = c.take(nb * str_stride);
    qstr = c.take(P::strip_floats(D, kB));
    dostr = c.take(P::strip_floats(D, kB));
    qrow = c.take(P::strip_floats(kB, D));
    dorow = c.take(P::strip_floats(kB, D));
    st = c.take(kB * kB);
    dpt = c.take(kB * kB);
    zt = c.take(kB * kB);
    apan = c.take(P::panel_floats(kB, kB));
    delta = c.take(T);
  }
};

template <class P>
int64_t forward_scratch(int64_t T, int64_t D) {
  Carver c{nullptr};
  ForwardScratch<P> s(c, T, D);
  return c.used;
}

template <class P>
int64_t backward_scratch(int64_t T, int64_t D) {
  Carver c{nullptr};
  BackwardScratch<P> s(c, T, D);
  return c.used;
}

template <class P>
void forward(const AttentionHead& h, const float* q, const float* k, const float* v, float* o, float* lse,
                       float* scratch) {
  const int64_t T = h.T, D = h.D;
  Carver carver{scratch};
  ForwardScratch<P> s(carver, T, D);
  for (int64_t j0 = 0; j0 < T; j0 += kB) {  // K_j as the A of S^T, V_j as the B of P V_j
    const int64_t nk = min64(kB, T - j0);
    P::pack_panels(false, k + j0 * D, D, nk, D, s.kpan + (j0 / kB) * s.kpan_stride);
    P::pack_strips(false, v + j0 * D, D, nk, D, s.vstr + (j0 / kB) * s.vstr_stride);
  }
  for (int64_t i0 = 0; i0 < T; i0 += kB) {
    const int64_t mq = min64(kB, T - i0);
    float* oi = o + i0 * D;
    P::pack_strips(true, q + i0 * D, D, D, mq, s.qstr);  // Q_i^T as the B of S^T
    for (int64_t r = 0; r < mq; ++r) {
      s.m[r] = -__builtin_inff();
      s.l[r] = 0.0f;
      P::zero_row(oi + r * D, D);
    }
    for (int64_t j0 = 0; j0 <= i0; j0 += kB) {
      const int64_t nk = min64(kB, T - j0);
      P::gemm_block(D, s.kpan + (j0 / kB) * s.kpan_stride, nk, s.qstr, mq, h.scale, 0.0f, s.st, kB);
      if (h.dropout) h.dropout(h.dropout_ctx, i0, mq, j0, nk, s.zt, kB);
      P::softmax_block(s.st, h.dropout ? s.zt : nullptr, i0, mq, j0, nk, s.m, s.l, s.corr);
      for (int64_t r = 0; r < mq; ++r) P::scale_row(oi + r * D, D, s.corr[r]);
      P::pack_panels(true, s.st, kB, mq, nk, s.ppan);  // P = (P^T)^T as the A of P V_j
      P::gemm_block(nk, s.ppan, mq, s.vstr + (j0 / kB) * s.vstr_stride, D, 1.0f, 1.0f, oi, D);
    }
    for (int64_t r = 0; r < mq; ++r) {
      P::scale_row(oi + r * D, D, 1.0f / s.l[r]);
      lse[i0 + r] = s.m[r] + __builtin_logf(s.l[r]);
    }
  }
}

template <class P>
void backward(const AttentionHead& h, const float* q, const float* k, const float* v, const float* o,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv, float* scratch) {
  const int64_t T = h.T, D = h.D;
  Carver carver{scratch};
  BackwardScratch<P> s(carver, T, D);
  for (int64_t t = 0; t < T; ++t) {
    s.delta[t] = P::dot(dout + t * D, o + t * D, D);  // D_i = dO_i . O_i
    P::zero_row(dq + t * D, D);
    P::zero_row(dk + t * D, D);
    P::zero_row(dv + t * D, D);
  }
  for (int64_t j0 = 0; j0 < T; j0 += kB) {
    const int64_t nk = min64(kB, T - j0), jb = j0 / kB;
    P::pack_panels(false, k + j0 * D, D, nk, D, s.kpan + jb * s.pan_stride);  // A of S^T
    P::pack_panels(false, v + j0 * D, D, nk, D, s.vpan + jb * s.pan_stride);  // A of dP^T
    P::pack_strips(false, k + j0 * D, D, nk, D, s.kstr + jb * s.str_stride);  // B of dS K_j
  }
  for (int64_t i0 = 0; i0 < T; i0 += kB) {
    const int64_t mq = min64(kB, T - i0);
    P::pack_strips(true, q + i0 * D, D, D, mq, s.qstr);       // B of S^T
    P::pack_strips(true, dout + i0 * D, D, D, mq, s.dostr);   // B of dP^T
    P::pack_strips(false, q + i0 * D, D, mq, D, s.qrow);      // B of dS^T Q_i
    P::pack_strips(false, dout + i0 * D, D, mq, D, s.dorow);  // B of (P Z)^T dO_i
    for (int64_t j0 = 0; j0 <= i0; j0 += kB) {
      const int64_t nk = min64(kB, T - j0), jb = j0 / kB;
      P::gemm_block(D, s.kpan + jb * s.pan_stride, nk, s.qstr, mq, h.scale, 0.0f, s.st, kB);
      P::gemm_block(D, s.vpan + jb * s.pan_stride, nk, s.dostr, mq, 1.0f, 0.0f, s.dpt, kB);
      if (h.dropout) h.dropout(h.dropout_ctx, i0, mq, j0, nk, s.zt, kB);
      P::dsoftmax_block(s.st, s.dpt, h.dropout ? s.zt : nullptr, lse, s.delta, h.scale, i0, mq, j0, nk);
      P::pack_panels(false, s.st, kB, nk, mq, s.apan);  // (P Z)^T
      P::gemm_block(mq, s.apan, nk, s.dorow, D, 1.0f, 1.0f, dv + j0 * D, D);
      P::pack_panels(true, s.dpt, kB, mq, nk, s.apan);  // dS
      P::gemm_block(nk, s.apan, mq, s.kstr + jb * s.str_stride, D, 1.0f, 1.0f, dq + i0 * D, D);
      P::pack_panels(false, s.dpt, kB, nk, mq, s.apan);  // dS^T
      P::gemm_block(mq, s.apan, nk, s.qrow, D, 1.0f, 1.0f, dk + j0 * D, D);
    }
  }
}

}  // namespace attention_blocks
}  // namespace
}  // namespace mt::cpu
