#pragma once
// The per-warp tile loops shared by the flash-attention kernels (attention_forward.cu,
// attention_backward.cu, attention_block.cu): a warp owns R rows (queries, or keys in dk/dv)
// staged in shared memory with stride DMAX, and walks a tile of kTile rows of the other side,
// a lane each for dot products, DPL dims per lane (d = lane + 32 k) for accumulations.
// Force-inlined, so each kernel compiles to the same instructions as with the loops written out.
#include "kernels/cuda/attention_common.cuh"

namespace mt::cuda::attn {

// s[r] = a_r . x over D dims: the warp's staged rows a_r = a + (r0 + r) DMAX against the lane's
// row x (float4 shared loads; both zero-padded to a multiple of 4).
template <int R, int DMAX>
__device__ __forceinline__ void tile_dots(float (&s)[R], const float* a, int r0, const float* x, int D) {
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.0f;
  for (int d = 0; d < D; d += 4) {
    const float4 xv = lds4(x + d);
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] += dot4(lds4(a + (r0 + r) * DMAX + d), xv);
  }
}

// Two at once, in one pass over d: s[r] = a_r . x and t[r] = b_r . y (scores and dp in backward).
template <int R, int DMAX>
__device__ __forceinline__ void tile_dots2(float (&s)[R], float (&t)[R], const float* a, const float* b, int r0,
                                           const float* x, const float* y, int D) {
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = t[r] = 0.0f;
  for (int d = 0; d < D; d += 4) {
    const float4 xv = lds4(x + d), yv = lds4(y + d);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      s[r] += dot4(lds4(a + (r0 + r) * DMAX + d), xv);
      t[r] += dot4(lds4(b + (r0 + r) * DMAX + d), yv);
    }
  }
}

// acc[r, d] += sum_j P[r, j] X[j, d] for the lane's dims d = lane + 32 k: the warp's P rows
// [R][kTile] against the staged tile X [kTile][LD], 4 rows of X in registers at a time
// (forward: o += P V; dq: dq += dS K).
template <int R, int DPL, int LD>
__device__ __forceinline__ void tile_accumulate(float (&acc)[R][DPL], const float* P, const float* X, int lane) {
  for (int jj = 0; jj < kTile; jj += 4) {
    float xx[4][DPL];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int k = 0; k < DPL; ++k) xx[u][k] = X[(jj + u) * LD + lane + 32 * k];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 pv = lds4(P + r * kTile + jj);
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int k = 0; k < DPL; ++k) acc[r][k] += comp(pv, u) * xx[u][k];
    }
  }
}

// dk/dv's two accumulations in one pass over the query tile (a warp's R keys, lane dims):
//   dv[r, d] += sum_i P[r, i] dO[i, d],   dk[r, d] += sum_i dS[r, i] Q[i, d]
// with P = p z and dS the warp's [R][kTile] rows, Q and dO the staged tile [kTile][LDK].
template <int R, int DPL, int LDK>
__device__ __forceinline__ void tile_accumulate_dkdv(float (&dk)[R][DPL], float (&dv)[R][DPL], const float* sQ,
                                                     const float* sdO, const float* P, const float* dS, int lane) {
  for (int ii = 0; ii < kTile; ii += 4) {
    float qq[4][DPL], gg[4][DPL];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int k = 0; k < DPL; ++k) {
        qq[u][k] = sQ[(ii + u) * LDK + lane + 32 * k];
        gg[u][k] = sdO[(ii + u) * LDK + lane + 32 * k];
      }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 pv = lds4(P + r * kTile + ii), sv = lds4(dS + r * kTile + ii);
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int k = 0; k < DPL; ++k) {
          dv[r][k] += comp(pv, u) * gg[u][k];
          dk[r][k] += comp(sv, u) * qq[u][k];
        }
    }
  }
}

// The online softmax's empty state of the warp's R rows: max -inf, sum 0, output 0.
template <int R, int DPL>
__device__ __forceinline__ void softmax_init(float (&o)[R][DPL], float (&m)[R], float (&l)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int k = 0; k < DPL; ++k) o[r][k] = 0.0f;
  }
}

// Online softmax of one row (log2 domain): moves the running max m to m_new (>= m, finite),
// rescales the sum l and the output o by corr = exp2(m - m_new), adds p = exp2(s - m_new) to l
// and returns p.
template <int DPL>
__device__ __forceinline__ float softmax_update(float& m, float& l, float (&o)[DPL], float s, float m_new) {
  const float corr = exp2f(m - m_new);
  const float p = exp2f(s - m_new);
  l = l * corr + p;
  m = m_new;
#pragma unroll
  for (int k = 0; k < DPL; ++k) o[k] *= corr;
  return p;
}

// Stages lse * log2e and delta of rows [r0, r0 + rows) of head row bh ([.., Tn]) into shared
// sL, sD; rows past Tn get lse_pad and delta 0.
__device__ __forceinline__ void load_lse_delta(float* sL, float* sD, const float* lse, const float* delta, int bh,
                                               int Tn, int r0, int rows, float lse_pad) {
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const bool ok = r0 + r < Tn;
    sL[r] = ok ? lse[int64_t(bh) * Tn + r0 + r] * kLog2e : lse_pad;
    sD[r] = ok ? delta[int64_t(bh) * Tn + r0 + r] : 0.0f;
  }
}

// delta[b, h, t] = dO . O of row (b T + t) H + h of [B, T, H, D]; a warp per row (the backward
// preprocess).
template <class T>
__device__ __forceinline__ void delta_rows(const T* dout, const T* out, float* delta, int64_t rows, int Tn, int H,
                                           int D) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  const T* g = dout + row * D;
  const T* o = out + row * D;
  float acc = 0.0f;
  for (int d = lane; d < D; d += 32) acc += to_float(g[d]) * to_float(o[d]);
  acc = warp_sum(acc);
  if (lane == 0) {
    const int64_t bt = row / H;  // row = (b T + t) H + h
    const int h = int(row - bt * H), b = int(bt / Tn), t = int(bt - int64_t(b) * Tn);
    delta[(int64_t(b) * H + h) * Tn + t] = acc;
  }
}

}  // namespace mt::cuda::attn
