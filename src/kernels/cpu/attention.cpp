// Causal self-attention on the CPU, flash-style (see attention.h for layouts), in blocks of
// kBlock queries x kBlock keys so that the heavy products are small single-threaded sgemms.
//   forward, per query block Qi and key blocks Kj (j <= i):
//     S = scale Qi Kj^T; online softmax per row: m' = max(m, rowmax S), l = l e^(m - m') +
//     sum e^(S - m'), Oi = Oi e^(m - m') + (e^(S - m') * Z) Vj; finally Oi /= l, lse = m + log l.
//   backward, per (b, h): D_i = dO_i.O_i; for each block pair P = e^(S - lse) (recomputed),
//     dP = dOi Vj^T, dVj += (P*Z)^T dOi, dS = scale P (dP Z - D), dQi += dS Kj, dKj += dS^T Qi.
//   Z is the dropout factor (keep ? 1/(1-p) : 0) of philox(seed, stream, ((b' H' + h') T + i) T + j)
//   in global coordinates (attention.h), drawn one Philox block per four keys; without dropout
//   Z = 1. Causally masked entries are 0.
// Grouped-query attention: query head h reads the k, v of group h / (H/G); a group's dK, dV are
// sums over its H/G query heads.
// In forward each (b, h) is owned by one thread; in backward each (b, group), which runs its
// query heads in order, so dK and dV are summed in a fixed order with no sharing between threads.
// A thread widens q, k, v (and dO) into fp32 scratch [T, D] (O(T D) traffic against O(T^2 D)
// FLOPs), keeps one kBlock x kBlock score tile (never a [T, T] matrix) and, in backward,
// accumulates dq, dk, dv in fp32 scratch in a fixed order before one store; so results do not
// depend on the thread count. sgemm runs single-threaded inside the OpenMP region, so each block
// product is the same arithmetic wherever it runs.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_dropout.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/load_store.h"
#if defined(__x86_64__)
#include "kernels/cpu/attention_avx2.h"
#include "kernels/cpu/attention_avx512.h"
#include "kernels/cpu_isa.h"
#endif

namespace mt::cpu {
namespace {

constexpr int64_t kBlock = 64;  // queries and keys per block; equal, so diagonal blocks line up

struct Dims {
  int64_t B, T, H, G, D;
  int64_t batch_offset, head_offset, mask_heads;  // the dropout mask's coordinates (attention.h)
  float scale;                                    // AttentionConfig::scale()
  int64_t per_group() const { return H / G; }
  int64_t qkv_token() const { return (H + 2 * G) * D; }  // qkv elements per token
  int64_t out_token() const { return H * D; }
  // Offsets within a token of query head h and of group g's key head (its value head follows).
  int64_t q_at(int64_t h) const { return (h / per_group() * (per_group() + 2) + h % per_group()) * D; }
  int64_t k_at(int64_t g) const { return (g * (per_group() + 2) + per_group()) * D; }
  // Row (b' H' + h') of head (b, h) in the dropout mask's counter ((b' H' + h') T + i) T + j.
  uint64_t mask_row(int64_t b, int64_t h) const {
    return uint64_t(batch_offset + b) * uint64_t(mask_heads) + uint64_t(head_offset + h);
  }
  uint64_t mask_index(uint64_t row, int64_t i, int64_t j) const {
    return (row * uint64_t(T) + uint64_t(i)) * uint64_t(T) + uint64_t(j);
  }
};

// C[m, n] = alpha op(A) op(B) + beta C, row-major.
void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
        int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_serial(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Widens query head h of sample b into fp32 [T, D] rows.
template <class T>
void gather_q(const T* qkv, const Dims& d, int64_t b, int64_t h, float* q) {
  for (int64_t t = 0; t < d.T; ++t) load_row(qkv + (b * d.T + t) * d.qkv_token() + d.q_at(h), q + t * d.D, d.D);
}

// Widens the key and value heads of group g of sample b into fp32 [T, D] rows.
template <class T>
void gather_kv(const T* qkv, const Dims& d, int64_t b, int64_t g, float* k, float* v) {
  for (int64_t t = 0; t < d.T; ++t) {
    const T* base = qkv + (b * d.T + t) * d.qkv_token() + d.k_at(g);
    load_row(base, k + t * d.D, d.D);
    load_row(base + d.D, v + t * d.D, d.D);
  }
}

// Narrows fp32 [T, D] rows into the slot `at` (an offset within a token) of every token of sample b.
template <class T>
void scatter_rows(const float* x, const Dims& d, int64_t b, int64_t at, T* dqkv) {
  for (int64_t t = 0; t < d.T; ++t) store_row(x + t * d.D, dqkv + (b * d.T + t) * d.qkv_token() + at, d.D);
}

// x[0..n) += y[0..n).
void add_rows(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

#if defined(__x86_64__)
// On the AVX-512 and AVX2 paths the block loop of one head runs in attention_avx512.cpp /
// attention_avx2.cpp (transposed scores, column softmax, the GEMM micro-kernel on operands packed
// once per head); threads take heads in forward and (b, group)s in backward.
struct HeadDrop {
  const DropMask* drop;
  const Dims* d;
  uint64_t row;  // Dims::mask_row of the head
};

// zt[(j - j0) * ldz + (i - i0)] = the dropout factor of query i, key j (attention_head.h).
void head_dropout(const void* ctx, int64_t i0, int64_t rows, int64_t j0, int64_t cols, float* zt, int64_t ldz) {
  const auto& h = *static_cast<const HeadDrop*>(ctx);
  float z[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    h.drop->factors(h.d->mask_index(h.row, i0 + r, j0), cols, z);
    for (int64_t c = 0; c < cols; ++c) zt[c * ldz + r] = z[c];
  }
}

AttentionHead head_of(const Dims& d, const DropMask& drop, const HeadDrop& hd) {
  AttentionHead h;
  h.T = d.T;
  h.D = d.D;
  h.scale = d.scale;
  if (drop.p > 0.0f) {
    h.dropout = &head_dropout;
    h.dropout_ctx = &hd;
  }
  return h;
}

// Each thread gathers its head's rows into fp32 [T, D] buffers first, for every dtype: reading
// an fp32 head in place (rows qkv_token apart, each on its own page) was measured no faster
// than the gather (a token's k, v are adjacent, one 2 D run) plus packing from [T, D].
// One path's per-head kernels (attention_avx512.h, attention_avx2.h).
struct HeadKernels {
  int64_t (*forward_scratch)(int64_t T, int64_t D);
  int64_t (*backward_scratch)(int64_t T, int64_t D);
  void (*forward)(const AttentionHead&, const float*, const float*, const float*, float*, float*, float*);
  void (*backward)(const AttentionHead&, const float*, const float*, const float*, const float*, const float*,
                   const float*, float*, float*, float*, float*);
};
constexpr HeadKernels kAvx512Heads{&avx512::attention_forward_scratch, &avx512::attention_backward_scratch,
                                   &avx512::attention_forward, &avx512::attention_backward};
constexpr HeadKernels kAvx2Heads{&avx2::attention_forward_scratch, &avx2::attention_backward_scratch,
                                 &avx2::attention_forward, &avx2::attention_backward};

// The path's head kernels, or null on the portable path.
const HeadKernels* head_kernels() {
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return &kAvx512Heads;
    case CpuIsa::kAvx2:
      return &kAvx2Heads;
    case CpuIsa::kPortable:
      break;
  }
  return nullptr;
}

template <class T>
void forward_simd_t(const HeadKernels& x, const T* qkv, T* out, float* lse, const Dims& d, const DropMask& drop) {
#pragma omp parallel
  {
    // One cached block per thread (no zero-fill): q, k, v, o [T, D] and the kernel's scratch,
    // each starting on a 64-byte boundary.
    const int64_t td = (d.T * d.D + 15) / 16 * 16;
    Tensor buf = Tensor::empty({4 * td + x.forward_scratch(d.T, d.D)}, DType::F32);
    float *q = buf.data<float>(), *k = q + td, *v = k + td, *o = v + td, *scratch = o + td;
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H;
      const HeadDrop hd{&drop, &d, d.mask_row(b, h)};
      gather_q(qkv, d, b, h, q);
      gather_kv(qkv, d, b, h / d.per_group(), k, v);
      x.forward(head_of(d, drop, hd), q, k, v, o, lse + bh * d.T, scratch);
      for (int64_t t = 0; t < d.T; ++t) store_row(o + t * d.D, out + (b * d.T + t) * d.out_token() + h * d.D, d.D);
    }
  }
}

template <class T>
void backward_simd_t(const HeadKernels& x, const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                     const Dims& d, const DropMask& drop) {
  const int64_t D = d.D, hpg = d.per_group();
#pragma omp parallel
  {
    // As in forward: q, k, v, o, dO, dq, dk, dv [T, D], the group's dK, dV sums, and the scratch.
    const int64_t td = (d.T * D + 15) / 16 * 16;
    Tensor buf = Tensor::empty({10 * td + x.backward_scratch(d.T, D)}, DType::F32);
    float *q = buf.data<float>(), *k = q + td, *v = k + td, *o = v + td, *dO = o + td, *dq = dO + td, *dk = dq + td,
          *dv = dk + td, *dk_sum = dv + td, *dv_sum = dk_sum + td, *scratch = dv_sum + td;
#pragma omp for schedule(dynamic, 1)
    for (int64_t bg = 0; bg < d.B * d.G; ++bg) {
      const int64_t b = bg / d.G, g = bg % d.G;
      gather_kv(qkv, d, b, g, k, v);
      for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
        const int64_t bh = b * d.H + h;
        const HeadDrop hd{&drop, &d, d.mask_row(b, h)};
        gather_q(qkv, d, b, h, q);
        for (int64_t t = 0; t < d.T; ++t) {
          const int64_t at = (b * d.T + t) * d.out_token() + h * D;
          load_row(out + at, o + t * D, D);
          load_row(dout + at, dO + t * D, D);
        }
        // The group's first head writes the sums, later ones add, in head order (one head: dk, dv as they are).
        const bool first = h == g * hpg;
        x.backward(head_of(d, drop, hd), q, k, v, o, dO, lse + bh * d.T, dq, first ? dk_sum : dk, first ? dv_sum : dv,
                   scratch);
        if (!first) {
          add_rows(dk_sum, dk, d.T * D);
          add_rows(dv_sum, dv, d.T * D);
        }
        scatter_rows(dq, d, b, d.q_at(h), dqkv);
      }
      scatter_rows(dk_sum, d, b, d.k_at(g), dqkv);
      scatter_rows(dv_sum, d, b, d.k_at(g) + D, dqkv);
    }
  }
}
#endif

template <class T>
void forward_t(const T* qkv, T* out, float* lse, const Dims& d, const DropMask& drop) {
#if defined(__x86_64__)
  if (const HeadKernels* x = head_kernels()) return forward_simd_t(*x, qkv, out, lse, d, drop);
#endif
  const int64_t D = d.D;
  const float scale = d.scale;
#pragma omp parallel
  {
    const size_t td = size_t(d.T * D);
    std::vector<float> q(td), k(td), v(td), o(size_t(kBlock * D)), s(size_t(kBlock * kBlock)), z(kBlock), m(kBlock),
        l(kBlock);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H;
      const uint64_t mask_row = d.mask_row(b, h);
      gather_q(qkv, d, b, h, q.data());
      gather_kv(qkv, d, b, h / d.per_group(), k.data(), v.data());
      for (int64_t i0 = 0; i0 < d.T; i0 += kBlock) {
        const int64_t mq = std::min(kBlock, d.T - i0);
        std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
        std::fill(l.begin(), l.end(), 0.0f);
        std::fill(o.begin(), o.end(), 0.0f);
        for (int64_t j0 = 0; j0 <= i0; j0 += kBlock) {
          const int64_t nk = std::min(kBlock, d.T - j0);
          mm(false, true, mq, nk, D, scale, &q[i0 * D], D, &k[j0 * D], D, 0.0f, s.data(), kBlock);
          for (int64_t r = 0; r < mq; ++r) {
            const int64_t i = i0 + r, valid = std::min(nk, i - j0 + 1);  // keys j <= i
            float* sr = &s[r * kBlock];
            const float mx = max_of(sr, valid, m[r]);
            const float correction = std::exp(m[r] - mx);  // 0 on the first block
            const float sum = exp_shifted_sum(sr, valid, mx);
            std::fill(sr + valid, sr + nk, 0.0f);
            if (drop.p > 0.0f) {
              drop.factors(d.mask_index(mask_row, i, j0), valid, z.data());
              for (int64_t j = 0; j < valid; ++j) sr[j] *= z[j];
            }
            l[r] = l[r] * correction + sum;
            m[r] = mx;
            float* orow = &o[r * D];
            for (int64_t c = 0; c < D; ++c) orow[c] *= correction;
          }
          mm(false, false, mq, D, nk, 1.0f, s.data(), kBlock, &v[j0 * D], D, 1.0f, o.data(), D);
        }
        for (int64_t r = 0; r < mq; ++r) {
          const float inv_l = 1.0f / l[r];
          T* orow = out + (b * d.T + i0 + r) * d.out_token() + h * D;
          for (int64_t c = 0; c < D; ++c) orow[c] = from_f32<T>(o[r * D + c] * inv_l);
          lse[bh * d.T + i0 + r] = m[r] + std::log(l[r]);
        }
      }
    }
  }
}

template <class T>
void backward_t(const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv, const Dims& d,
                const DropMask& drop) {
#if defined(__x86_64__)
  if (const HeadKernels* x = head_kernels()) return backward_simd_t(*x, dout, qkv, out, lse, dqkv, d, drop);
#endif
  const int64_t D = d.D, hpg = d.per_group();
  const float scale = d.scale;
#pragma omp parallel
  {
    const size_t td = size_t(d.T * D);
    std::vector<float> q(td), k(td), v(td), dO(td), dq(td), dk(td), dv(td), o(D), delta(d.T),
        s(size_t(kBlock * kBlock)), dp(size_t(kBlock * kBlock)), z(kBlock);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bg = 0; bg < d.B * d.G; ++bg) {
      const int64_t b = bg / d.G, g = bg % d.G;
      gather_kv(qkv, d, b, g, k.data(), v.data());
      // dk, dv sum over the group's query heads, in head order.
      std::fill(dk.begin(), dk.end(), 0.0f);
      std::fill(dv.begin(), dv.end(), 0.0f);
      for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
        const int64_t bh = b * d.H + h;
        const uint64_t mask_row = d.mask_row(b, h);
        gather_q(qkv, d, b, h, q.data());
        for (int64_t t = 0; t < d.T; ++t) {
          const int64_t at = (b * d.T + t) * d.out_token() + h * D;
          load_row(dout + at, &dO[t * D], D);
          load_row(out + at, o.data(), D);
          float acc = 0.0f;
          for (int64_t c = 0; c < D; ++c) acc += dO[t * D + c] * o[c];
          delta[t] = acc;
        }
        std::fill(dq.begin(), dq.end(), 0.0f);
        for (int64_t i0 = 0; i0 < d.T; i0 += kBlock) {
          const int64_t mq = std::min(kBlock, d.T - i0);
          for (int64_t j0 = 0; j0 <= i0; j0 += kBlock) {
            const int64_t nk = std::min(kBlock, d.T - j0);
            mm(false, true, mq, nk, D, scale, &q[i0 * D], D, &k[j0 * D], D, 0.0f, s.data(), kBlock);
            mm(false, true, mq, nk, D, 1.0f, &dO[i0 * D], D, &v[j0 * D], D, 0.0f, dp.data(), kBlock);
            for (int64_t r = 0; r < mq; ++r) {
              const int64_t i = i0 + r, valid = std::min(nk, i - j0 + 1);
              const float lse_i = lse[bh * d.T + i], delta_i = delta[i];
              float *sr = &s[r * kBlock], *dpr = &dp[r * kBlock];
              if (drop.p > 0.0f) {
                drop.factors(d.mask_index(mask_row, i, j0), valid, z.data());
              } else {
                std::fill(z.begin(), z.begin() + valid, 1.0f);
              }
              exp_shifted_sum(sr, valid, lse_i);  // P
              for (int64_t j = 0; j < valid; ++j) {
                const float p = sr[j];
                sr[j] = p * z[j];                                // P * Z, for dV
                dpr[j] = scale * p * (dpr[j] * z[j] - delta_i);  // dS, scaled for dQ and dK
              }
              std::fill(sr + valid, sr + nk, 0.0f);
              std::fill(dpr + valid, dpr + nk, 0.0f);
            }
            mm(true, false, nk, D, mq, 1.0f, s.data(), kBlock, &dO[i0 * D], D, 1.0f, &dv[j0 * D], D);
            mm(false, false, mq, D, nk, 1.0f, dp.data(), kBlock, &k[j0 * D], D, 1.0f, &dq[i0 * D], D);
            mm(true, false, nk, D, mq, 1.0f, dp.data(), kBlock, &q[i0 * D], D, 1.0f, &dk[j0 * D], D);
          }
        }
        scatter_rows(dq.data(), d, b, d.q_at(h), dqkv);
      }
      scatter_rows(dk.data(), d, b, d.k_at(g), dqkv);
      scatter_rows(dv.data(), d, b, d.k_at(g) + D, dqkv);
    }
  }
}

Dims dims_of(const Tensor& qkv, const AttentionConfig& cfg) {
  return {qkv.size(0), qkv.size(1), cfg.n_heads, cfg.groups(), cfg.head_dim, cfg.batch_offset, cfg.head_offset,
          cfg.mask_heads(), cfg.scale()};
}
DropMask mask_of(const AttentionConfig& cfg) {
  return {cfg.dropout_p, 1.0f / (1.0f - cfg.dropout_p), cfg.seed, cfg.stream};
}

}  // namespace

void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_t(qkv.data<T>(), out.data<T>(), lse.data<float>(), dims_of(qkv, cfg), mask_of(cfg));
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& dqkv,
                        const AttentionConfig& cfg) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_t(dout.data<T>(), qkv.data<T>(), out.data<T>(), lse.data<float>(), dqkv.data<T>(), dims_of(qkv, cfg),
               mask_of(cfg));
  });
}

}  // namespace mt::cpu
