// Attention of a query block against a key/value block under an explicit position/document mask
// (attention_block.h) on the CPU, flash-style in tiles of kBlock queries x kBlock keys, so the
// heavy products are small single-threaded sgemms (the portable loop of cpu/attention.cpp with
// the causal triangle replaced by a per-element mask):
//   forward, per query tile Qi and key tile Kj:
//     S = scale Qi Kj^T, masked scores -inf; online softmax per row: m' = max(m, rowmax S),
//     l = l e^(m - m') + sum e^(S - m'), Oi = Oi e^(m - m') + (e^(S - m') * Z) Vj;
//     finally Oi /= l, lse = m + log l (a row that saw no key: O = 0, lse = -inf).
//   backward, per (b, h): D_i = dO_i . O_i from the merged O; per tile pair P = e^(S - lse)
//     (recomputed, masked 0; lse is the merged normaliser, so P is exact), dP = dOi Vj^T,
//     dVj += (P*Z)^T dOi, dS = scale P (dP Z - D), dQi += dS Kj, dKj += dS^T Qi.
//   Z is the dropout factor of philox(seed, stream, ((b' H' + h') S + q_pos) S + k_pos) (Philox
//   block index >> 2, word index & 3: attention_dropout.h), 1 without dropout.
// A tile pair that no query of the tile can see is skipped (first by positions alone, min k_pos
// > max q_pos, then by the element mask), so causal pairs cost half and other documents nothing.
// The mask costs O(kBlock^2) compares per visited tile pair on the diagonal or with documents
// (none for a pair wholly below the diagonal) against the 4 (forward) or 10 (backward) kBlock^2 D
// FLOPs of its products.
// Forward threads over (b, h), backward over (b, group) running the group's query heads in
// order, so a group's dK, dV sum its heads in a fixed order and no output row is shared between
// threads: results do not depend on the thread count. Each thread widens its head's rows into
// fp32 scratch ([Tq, D] and [Tk, D]; O(T D) traffic against O(Tq Tk D) FLOPs) and keeps one tile
// of scores, never a [Tq, Tk] matrix.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_dropout.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

constexpr int64_t kBlock = 64;  // queries and keys per tile
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Dims {
  int64_t B, Tq, Tk, H, G, D;
  float scale;  // AttentionConfig::scale()
  int64_t per_group() const { return H / G; }
  int64_t qkv_token() const { return (H + 2 * G) * D; }  // qkv elements per token
  int64_t kv_token() const { return 2 * G * D; }         // kv elements per token
  int64_t out_token() const { return H * D; }            // out, dout, dq_acc elements per token
  // Offset within a qkv token of query head h.
  int64_t q_at(int64_t h) const { return (h / per_group() * (per_group() + 2) + h % per_group()) * D; }
};

// Sample b's view of the mask: who sees whom, and where the dropout mask is drawn.
struct SampleMask {
  const int32_t *qp, *kp;  // positions [Tq], [Tk]
  const int32_t *qd, *kd;  // documents, or null (one document)
  bool sees(int64_t i, int64_t j) const { return kp[j] <= qp[i] && (!qd || kd[j] == qd[i]); }
};

SampleMask sample_mask(const AttentionMask& m, const Dims& d, int64_t b) {
  const bool docs = m.q_doc.defined();
  return {m.q_pos.data<int32_t>() + b * d.Tq, m.k_pos.data<int32_t>() + b * d.Tk,
          docs ? m.q_doc.data<int32_t>() + b * d.Tq : nullptr, docs ? m.k_doc.data<int32_t>() + b * d.Tk : nullptr};
}

// The dropout mask's coordinates (attention_block.h): index ((b' H' + h') S + q_pos) S + k_pos.
struct DropCoords {
  uint64_t S;
  int64_t batch_offset, head_offset, mask_heads;
  uint64_t row(int64_t b, int64_t h) const {
    return uint64_t(batch_offset + b) * uint64_t(mask_heads) + uint64_t(head_offset + h);
  }
  uint64_t index(uint64_t row, int32_t q_pos, int32_t k_pos) const {
    return (row * S + uint64_t(q_pos)) * S + uint64_t(k_pos);
  }
};

// vis[r * kBlock + c] = query i0 + r sees key j0 + c, for the tile's mq x nk pairs; returns
// whether any pair is visible (false: the tile pair is skipped).
bool tile_mask(const SampleMask& m, int64_t i0, int64_t mq, int64_t j0, int64_t nk, uint8_t* vis) {
  int32_t q_min = std::numeric_limits<int32_t>::max(), q_max = std::numeric_limits<int32_t>::min();
  int32_t k_min = q_min, k_max = q_max;
  for (int64_t r = 0; r < mq; ++r) {
    q_min = std::min(q_min, m.qp[i0 + r]);
    q_max = std::max(q_max, m.qp[i0 + r]);
  }
  for (int64_t c = 0; c < nk; ++c) {
    k_min = std::min(k_min, m.kp[j0 + c]);
    k_max = std::max(k_max, m.kp[j0 + c]);
  }
  if (k_min > q_max) return false;  // every key is later than every query
  if (!m.qd && k_max <= q_min) {    // every query sees every key (below the causal diagonal)
    for (int64_t r = 0; r < mq; ++r) std::memset(vis + r * kBlock, 1, size_t(nk));
    return true;
  }
  bool any = false;
  for (int64_t r = 0; r < mq; ++r)
    for (int64_t c = 0; c < nk; ++c) {
      const bool v = m.sees(i0 + r, j0 + c);
      vis[r * kBlock + c] = v;
      any |= v;
    }
  return any;
}

// C[m, n] = alpha op(A) op(B) + beta C, row-major.
void mm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
        int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_serial(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Widens rows [0, n) of a strided [n, D] view into fp32 [n, D].
template <class T>
void gather(const T* base, int64_t stride, int64_t n, int64_t D, float* dst) {
  for (int64_t t = 0; t < n; ++t) load_row(base + t * stride, dst + t * D, D);
}

// rows [0, n) of a strided fp32 [n, D] view += src [n, D].
void accumulate(const float* src, int64_t n, int64_t D, float* base, int64_t stride) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < D; ++c) base[t * stride + c] += src[t * D + c];
}

template <class T>
void forward_t(const T* qkv, const T* kv, const AttentionMask& mask, float* out, float* lse, const Dims& d,
               const DropMask& drop, const DropCoords& dc) {
  const int64_t D = d.D;
  const float scale = d.scale;
#pragma omp parallel
  {
    std::vector<float> q(size_t(d.Tq * D)), k(size_t(d.Tk * D)), v(size_t(d.Tk * D)), o(size_t(kBlock * D)),
        s(size_t(kBlock * kBlock)), m(kBlock), l(kBlock);
    std::vector<uint8_t> vis(size_t(kBlock * kBlock));
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H, g = h / d.per_group();
      const SampleMask sm = sample_mask(mask, d, b);
      const uint64_t mask_row = dc.row(b, h);
      gather(qkv + b * d.Tq * d.qkv_token() + d.q_at(h), d.qkv_token(), d.Tq, D, q.data());
      gather(kv + b * d.Tk * d.kv_token() + g * 2 * D, d.kv_token(), d.Tk, D, k.data());
      gather(kv + b * d.Tk * d.kv_token() + g * 2 * D + D, d.kv_token(), d.Tk, D, v.data());
      for (int64_t i0 = 0; i0 < d.Tq; i0 += kBlock) {
        const int64_t mq = std::min(kBlock, d.Tq - i0);
        std::fill(m.begin(), m.end(), -kInf);
        std::fill(l.begin(), l.end(), 0.0f);
        std::fill(o.begin(), o.end(), 0.0f);
        for (int64_t j0 = 0; j0 < d.Tk; j0 += kBlock) {
          const int64_t nk = std::min(kBlock, d.Tk - j0);
          if (!tile_mask(sm, i0, mq, j0, nk, vis.data())) continue;
          mm(false, true, mq, nk, D, scale, &q[i0 * D], D, &k[j0 * D], D, 0.0f, s.data(), kBlock);
          for (int64_t r = 0; r < mq; ++r) {
            const uint8_t* vr = &vis[r * kBlock];
            float* sr = &s[r * kBlock];
            for (int64_t c = 0; c < nk; ++c)
              if (!vr[c]) sr[c] = -kInf;
            const float mx = max_of(sr, nk, m[r]);
            if (mx == -kInf) {  // no visible key yet: nothing to add, and e^(m - m') would be NaN
              std::fill(sr, sr + nk, 0.0f);
              continue;
            }
            const float correction = std::exp(m[r] - mx);  // 0 on the row's first visible tile
            const float sum = exp_shifted_sum(sr, nk, mx);  // masked scores give e^-inf = 0
            if (drop.p > 0.0f) {
              DropDraw z{drop};
              const int32_t qpos = sm.qp[i0 + r];
              for (int64_t c = 0; c < nk; ++c)
                if (vr[c]) sr[c] *= z(dc.index(mask_row, qpos, sm.kp[j0 + c]));
            }
            l[r] = l[r] * correction + sum;
            m[r] = mx;
            float* orow = &o[r * D];
            for (int64_t c = 0; c < D; ++c) orow[c] *= correction;
          }
          mm(false, false, mq, D, nk, 1.0f, s.data(), kBlock, &v[j0 * D], D, 1.0f, o.data(), D);
        }
        for (int64_t r = 0; r < mq; ++r) {
          const float inv_l = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;  // o is 0 where l is
          float* orow = out + (b * d.Tq + i0 + r) * d.out_token() + h * D;
          for (int64_t c = 0; c < D; ++c) orow[c] = o[r * D + c] * inv_l;
          lse[bh * d.Tq + i0 + r] = l[r] > 0.0f ? m[r] + std::log(l[r]) : -kInf;
        }
      }
    }
  }
}

template <class T>
void backward_t(const T* dout, const T* qkv, const T* kv, const T* out, const float* lse, const AttentionMask& mask,
                float* dq_acc, float* dkv_acc, const Dims& d, const DropMask& drop, const DropCoords& dc) {
  const int64_t D = d.D, hpg = d.per_group();
  const float scale = d.scale;
#pragma omp parallel
  {
    const size_t qd = size_t(d.Tq * D), kd = size_t(d.Tk * D);
    std::vector<float> q(qd), dO(qd), dq(qd), k(kd), v(kd), dk(kd), dv(kd), o(size_t(d.D)), delta(size_t(d.Tq)),
        s(size_t(kBlock * kBlock)), dp(size_t(kBlock * kBlock));
    std::vector<uint8_t> vis(size_t(kBlock * kBlock));
#pragma omp for schedule(dynamic, 1)
    for (int64_t bg = 0; bg < d.B * d.G; ++bg) {
      const int64_t b = bg / d.G, g = bg % d.G;
      const SampleMask sm = sample_mask(mask, d, b);
      const int64_t kv_at = b * d.Tk * d.kv_token() + g * 2 * D;
      gather(kv + kv_at, d.kv_token(), d.Tk, D, k.data());
      gather(kv + kv_at + D, d.kv_token(), d.Tk, D, v.data());
      // dk, dv sum over the group's query heads, in head order.
      std::fill(dk.begin(), dk.end(), 0.0f);
      std::fill(dv.begin(), dv.end(), 0.0f);
      for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
        const int64_t bh = b * d.H + h, row_at = b * d.Tq * d.out_token() + h * D;
        const uint64_t mask_row = dc.row(b, h);
        gather(qkv + b * d.Tq * d.qkv_token() + d.q_at(h), d.qkv_token(), d.Tq, D, q.data());
        gather(dout + row_at, d.out_token(), d.Tq, D, dO.data());
        for (int64_t t = 0; t < d.Tq; ++t) {
          load_row(out + row_at + t * d.out_token(), o.data(), D);
          float acc = 0.0f;
          for (int64_t c = 0; c < D; ++c) acc += dO[t * D + c] * o[c];
          delta[t] = acc;
        }
        std::fill(dq.begin(), dq.end(), 0.0f);
        for (int64_t i0 = 0; i0 < d.Tq; i0 += kBlock) {
          const int64_t mq = std::min(kBlock, d.Tq - i0);
          for (int64_t j0 = 0; j0 < d.Tk; j0 += kBlock) {
            const int64_t nk = std::min(kBlock, d.Tk - j0);
            if (!tile_mask(sm, i0, mq, j0, nk, vis.data())) continue;
            mm(false, true, mq, nk, D, scale, &q[i0 * D], D, &k[j0 * D], D, 0.0f, s.data(), kBlock);
            mm(false, true, mq, nk, D, 1.0f, &dO[i0 * D], D, &v[j0 * D], D, 0.0f, dp.data(), kBlock);
            for (int64_t r = 0; r < mq; ++r) {
              const int64_t i = i0 + r;
              const float lse_i = lse[bh * d.Tq + i], delta_i = delta[i];
              const uint8_t* vr = &vis[r * kBlock];
              float *sr = &s[r * kBlock], *dpr = &dp[r * kBlock];
              if (lse_i == -kInf) {  // the query sees no key anywhere: no gradient flows through it
                std::fill(sr, sr + nk, 0.0f);
                std::fill(dpr, dpr + nk, 0.0f);
                continue;
              }
              for (int64_t c = 0; c < nk; ++c)
                if (!vr[c]) sr[c] = -kInf;
              exp_shifted_sum(sr, nk, lse_i);  // P, 0 where masked
              DropDraw draw{drop};
              for (int64_t c = 0; c < nk; ++c) {
                if (!vr[c]) {
                  sr[c] = dpr[c] = 0.0f;
                  continue;
                }
                const float z = drop.p > 0.0f ? draw(dc.index(mask_row, sm.qp[i], sm.kp[j0 + c])) : 1.0f;
                const float p = sr[c];
                sr[c] = p * z;                                   // P * Z, for dV
                dpr[c] = scale * p * (dpr[c] * z - delta_i);     // dS, scaled for dQ and dK
              }
            }
            mm(true, false, nk, D, mq, 1.0f, s.data(), kBlock, &dO[i0 * D], D, 1.0f, &dv[j0 * D], D);
            mm(false, false, mq, D, nk, 1.0f, dp.data(), kBlock, &k[j0 * D], D, 1.0f, &dq[i0 * D], D);
            mm(true, false, nk, D, mq, 1.0f, dp.data(), kBlock, &q[i0 * D], D, 1.0f, &dk[j0 * D], D);
          }
        }
        accumulate(dq.data(), d.Tq, D, dq_acc + row_at, d.out_token());
      }
      accumulate(dk.data(), d.Tk, D, dkv_acc + kv_at, d.kv_token());
      accumulate(dv.data(), d.Tk, D, dkv_acc + kv_at + D, d.kv_token());
    }
  }
}

Dims dims_of(const Tensor& qkv, const Tensor& kv, const AttentionConfig& cfg) {
  return {qkv.size(0), qkv.size(1), kv.size(1), cfg.n_heads, cfg.groups(), cfg.head_dim, cfg.scale()};
}
DropMask drop_of(const AttentionConfig& cfg) {
  return {cfg.dropout_p, 1.0f / (1.0f - cfg.dropout_p), cfg.seed, cfg.stream};
}
DropCoords coords_of(const AttentionMask& mask, const AttentionConfig& cfg) {
  return {uint64_t(mask.seq), cfg.batch_offset, cfg.head_offset, cfg.mask_heads()};
}

}  // namespace

void attention_block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const Tensor& out,
                             const Tensor& lse, const AttentionConfig& cfg) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_t(qkv.data<T>(), kv.data<T>(), mask, out.data<float>(), lse.data<float>(), dims_of(qkv, kv, cfg),
              drop_of(cfg), coords_of(mask, cfg));
  });
}

void attention_block_backward(const Tensor& dout, const Tensor& qkv, const Tensor& kv, const Tensor& out,
                              const Tensor& lse, const AttentionMask& mask, const Tensor& dq_acc,
                              const Tensor& dkv_acc, const AttentionConfig& cfg) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_t(dout.data<T>(), qkv.data<T>(), kv.data<T>(), out.data<T>(), lse.data<float>(), mask,
               dq_acc.data<float>(), dkv_acc.data<float>(), dims_of(qkv, kv, cfg), drop_of(cfg),
               coords_of(mask, cfg));
  });
}

}  // namespace mt::cpu
