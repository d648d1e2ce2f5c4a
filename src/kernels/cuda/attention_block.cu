// Attention of a query block against a key/value block under a position/document mask
// (attention_block.h) on CUDA: the native flash kernels of attention_forward.cu and
// attention_backward.cu (fp32 math on CUDA cores, the layout helpers of attention_common.cuh)
// with the causal triangle replaced by a per-element mask read from the tokens' positions and
// documents, staged in shared memory with each tile:
//   visible(i, j) = k_pos[j] <= q_pos[i] && k_doc[j] == q_doc[i]
// Padded rows get positions that see nothing (queries INT_MIN, keys INT_MAX). Before loading a
// tile's K, V (or Q, dO) a block checks its mask with __syncthreads_or and skips a tile no pair
// of which is visible, so a causal block pair costs about half and other documents nothing; a
// warp also skips a tile none of its rows sees.
//   forward   a block per (64 queries, b, h); online softmax over the key tiles of 32; out fp32,
//             lse = -inf and out 0 for a query that saw no key.
//   backward  delta_i = dO_i . O_i (a warp per row, from the merged out); dkdv: a block per
//             (8 W keys, b, group) walks the group's query heads in order and their query tiles
//             of 32, so dk, dv sum in registers in a fixed order; dq: a block per (64 queries,
//             b, h) walks the key tiles. P = exp(S - lse) with the merged lse. Each thread adds
//             its own elements of dq_acc, dkv_acc once: deterministic, no atomics.
// Dropout: philox_uniform(seed, stream, ((b' H' + h') S + q_pos) S + k_pos) > p, the draw of
// cpu/attention_dropout.h, so CUDA and CPU drop the same probabilities.
// Cost: forward 4 B H Tq Tk D FLOPs over the visible tiles, backward 14 (QK^T and dO V^T are
// computed in both backward kernels: the price of determinism without a dq scratch); SIMT fp32,
// a fraction of a tensor-core kernel's speed (see attention_forward.cu). Global traffic: each
// block reads its own rows once and the other side's rows of every tile it visits (mostly L2
// hits), plus the tile's positions for every tile, visible or not.
#include <climits>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

using namespace attn;

struct BlockParams {
  int Tq, Tk, H, G, D, per_group;
  int64_t qtok, ktok;  // qkv and kv elements per token: (H + 2G) D, 2 G D
  float qk_mul;        // scale * log2(e), scale = 1/sqrt(D)
  float scale;
  float p_drop, inv_keep;
  uint64_t seed, stream, S;  // S: the full sequence length (the dropout mask's coordinates)
  int64_t batch_offset;
  int head_offset, mask_heads;
  const int32_t *q_pos, *k_pos;  // [B, Tq], [B, Tk]
  const int32_t *q_doc, *k_doc;  // the same, or null (one document)
};

BlockParams make_block_params(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask,
                              const AttentionConfig& cfg) {
  BlockParams p;
  p.Tq = int(qkv.size(1));
  p.Tk = int(kv.size(1));
  p.H = cfg.n_heads;
  p.G = cfg.groups();
  p.D = cfg.head_dim;
  p.per_group = cfg.heads_per_group();
  p.qtok = int64_t(p.H + 2 * p.G) * p.D;
  p.ktok = int64_t(2 * p.G) * p.D;
  p.scale = cfg.scale();
  p.qk_mul = p.scale * kLog2e;
  p.p_drop = cfg.dropout_p;
  p.inv_keep = 1.0f / (1.0f - cfg.dropout_p);
  p.seed = cfg.seed;
  p.stream = cfg.stream;
  p.S = uint64_t(mask.seq);
  p.batch_offset = cfg.batch_offset;
  p.head_offset = cfg.head_offset;
  p.mask_heads = cfg.mask_heads();
  p.q_pos = mask.q_pos.data<int32_t>();
  p.k_pos = mask.k_pos.data<int32_t>();
  p.q_doc = mask.q_doc.defined() ? mask.q_doc.data<int32_t>() : nullptr;
  p.k_doc = mask.k_doc.defined() ? mask.k_doc.data<int32_t>() : nullptr;
  return p;
}

// The dropout factor (0 or 1/(1-p)) of the query at q_pos and the key at k_pos of mask row `row`.
__device__ __forceinline__ float drop_factor(const BlockParams& p, uint64_t row, int q_pos, int k_pos) {
  const uint64_t idx = (row * p.S + uint64_t(q_pos)) * p.S + uint64_t(k_pos);
  return philox_uniform(p.seed, p.stream, idx) > p.p_drop ? p.inv_keep : 0.0f;
}

// Stages rows [r0, r0 + rows) of sample b's positions and documents into shared memory; rows
// past n get `pad` (a position that sees nothing) and document 0.
__device__ __forceinline__ void load_mask_rows(int* pos, int* doc, const int32_t* all_pos, const int32_t* all_doc,
                                               int b, int n, int r0, int rows, int pad) {
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const bool ok = r0 + r < n;
    const int64_t at = int64_t(b) * n + r0 + r;
    pos[r] = ok ? all_pos[at] : pad;
    doc[r] = ok && all_doc ? all_doc[at] : 0;
  }
}

__device__ __forceinline__ bool sees(const int* qpos, const int* qdoc, int i, const int* kpos, const int* kdoc,
                                     int j) {
  return kpos[j] <= qpos[i] && kdoc[j] == qdoc[i];
}

// Whether any of the nq x nk pairs of the staged rows is visible, over the whole block (every
// thread must call it: it ends in __syncthreads_or).
__device__ __forceinline__ bool block_any_visible(const int* qpos, const int* qdoc, int nq, const int* kpos,
                                                  const int* kdoc, int nk) {
  bool any = false;
  for (int idx = threadIdx.x; idx < nq * nk && !any; idx += blockDim.x)
    any = sees(qpos, qdoc, idx / nk, kpos, kdoc, idx % nk);
  return __syncthreads_or(any) != 0;
}

// ---- forward ----

constexpr int kWarps = 8;
constexpr int kBR = kWarps * kRowsPerWarp;  // 64 queries per forward and dq block

template <int DPL>
constexpr size_t forward_smem_bytes() {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4;
  return sizeof(float) * (size_t(kBR) * DMAX + size_t(kTile) * LDK + size_t(kTile) * DMAX +
                          size_t(kWarps) * kRowsPerWarp * kTile) +
         sizeof(int) * 2 * (kBR + kTile);
}

template <class T, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    block_forward_kernel(const T* qkv, const T* kv, float* out, float* lse, BlockParams p) {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, R = kRowsPerWarp;
  extern __shared__ float4 smem4[];
  float* sQ = reinterpret_cast<float*>(smem4);  // [kBR][DMAX], pre-scaled by qk_mul
  float* sK = sQ + kBR * DMAX;                  // [kTile][LDK]
  float* sV = sK + kTile * LDK;                 // [kTile][DMAX]
  float* sP = sV + kTile * DMAX;                // [kWarps][R][kTile]
  int* sQpos = reinterpret_cast<int*>(sP + kWarps * R * kTile);
  int* sQdoc = sQpos + kBR;
  int* sKpos = sQdoc + kBR;
  int* sKdoc = sKpos + kTile;

  const int Tq = p.Tq, Tk = p.Tk, D = p.D, H = p.H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = int(blockIdx.x) * kBR;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const T* kbase = kv + int64_t(b) * Tk * p.ktok + int64_t(h / p.per_group) * 2 * D;
  const uint64_t mrow = mask_row(p, b, h);
  const int lr0 = warp * R;  // the warp's first row in the block
  float* myP = sP + warp * R * kTile;

  load_rows(sQ, DMAX, kBR, DMAX, qkv + int64_t(b) * Tq * p.qtok + q_at(p, h), p.qtok, q0, Tq, D, p.qk_mul);
  load_mask_rows(sQpos, sQdoc, p.q_pos, p.q_doc, b, Tq, q0, kBR, INT_MIN);

  float o[R][DPL], m[R], l[R];
  softmax_init(o, m, l);

  for (int k0 = 0; k0 < Tk; k0 += kTile) {
    __syncthreads();  // the previous tile is no longer read (and the query rows are staged)
    load_mask_rows(sKpos, sKdoc, p.k_pos, p.k_doc, b, Tk, k0, kTile, INT_MAX);
    __syncthreads();
    if (!block_any_visible(sQpos, sQdoc, kBR, sKpos, sKdoc, kTile)) continue;
    load_rows(sK, LDK, kTile, DMAX, kbase, p.ktok, k0, Tk, D, 1.0f);
    load_rows(sV, DMAX, kTile, DMAX, kbase + D, p.ktok, k0, Tk, D, 1.0f);
    __syncthreads();
    bool vis[R];
    bool any = false;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      vis[r] = sees(sQpos, sQdoc, lr0 + r, sKpos, sKdoc, lane);
      any |= vis[r];
    }
    if (!__any_sync(0xffffffffu, any)) continue;

    // Scores of key k0 + lane against the warp's R rows.
    float s[R];
    tile_dots<R, DMAX>(s, sQ, lr0, sK + lane * LDK, D);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sr = vis[r] ? s[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sr));
      float pr = 0.0f;
      if (m_new != -INFINITY) {  // warp-uniform; -inf: the row has seen no key yet, nothing to add
        // corr = exp2(m - m_new) is 0 on the row's first visible tile; pr is 0 where masked
        pr = softmax_update(m[r], l[r], o[r], sr, m_new);
        if (p.p_drop > 0.0f && vis[r]) pr *= drop_factor(p, mrow, sQpos[lr0 + r], sKpos[lane]);
      }
      myP[r * kTile + lane] = pr;
    }
    __syncwarp();
    // o[r, d] += sum_j P[r, j] V[j, d] for the lane's dims d = lane + 32 k.
    tile_accumulate<R, DPL, DMAX>(o, myP, sV, lane);
    __syncwarp();
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = q0 + lr0 + r;
    const float lt = warp_sum(l[r]);
    if (i >= Tq) continue;
    const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;  // o is 0 where l is
    float* orow = out + ((int64_t(b) * Tq + i) * H + h) * D;
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) orow[d] = o[r][k] * inv;
    }
    if (lane == 0) lse[int64_t(bh) * Tq + i] = lt > 0.0f ? (m[r] + log2f(lt)) * kLn2 : -INFINITY;
  }
}

// ---- backward ----

// delta[b, h, i] = dO_i . O_i; a warp per (token, head) row of [B, Tq, H, D].
template <class T>
__global__ void block_delta_kernel(const T* dout, const T* out, float* delta, int64_t rows, int Tq, int H, int D) {
  delta_rows(dout, out, delta, rows, Tq, H, D);
}

template <int DPL>
constexpr int kDkdvWarps = DPL <= 2 ? 8 : 4;  // fewer warps for wide heads: K, V of the block in bounds

template <int DPL>
constexpr size_t dq_smem_bytes() {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4;
  return sizeof(float) * (2 * size_t(kBR) * DMAX + 2 * size_t(kTile) * LDK + size_t(kWarps) * kRowsPerWarp * kTile +
                          2 * size_t(kBR)) +
         sizeof(int) * 2 * (kBR + kTile);
}
template <int DPL>
constexpr size_t dkdv_smem_bytes() {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, BK = kDkdvWarps<DPL> * kRowsPerWarp;
  return sizeof(float) *
             (2 * size_t(BK) * DMAX + 2 * size_t(kTile) * LDK + 2 * size_t(BK) * kTile + 2 * size_t(kTile)) +
         sizeof(int) * 2 * (BK + kTile);
}

// dq_acc[b, i, h] += scale sum_j ds_ij k_j over the visible keys, ds = p (dp z - delta).
template <class T, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    block_dq_kernel(const T* dout, const T* qkv, const T* kv, const float* lse, const float* delta, float* dq_acc,
                    BlockParams p) {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, R = kRowsPerWarp;
  extern __shared__ float4 smem4[];
  float* sQ = reinterpret_cast<float*>(smem4);  // [kBR][DMAX], pre-scaled by qk_mul
  float* sdO = sQ + kBR * DMAX;                 // [kBR][DMAX]
  float* sK = sdO + kBR * DMAX;                 // [kTile][LDK]
  float* sV = sK + kTile * LDK;                 // [kTile][LDK]
  float* sS = sV + kTile * LDK;                 // [kWarps][R][kTile]: ds
  float* sL = sS + kWarps * R * kTile;          // [kBR]: lse * log2e
  float* sD = sL + kBR;                         // [kBR]: delta
  int* sQpos = reinterpret_cast<int*>(sD + kBR);
  int* sQdoc = sQpos + kBR;
  int* sKpos = sQdoc + kBR;
  int* sKdoc = sKpos + kTile;

  const int Tq = p.Tq, Tk = p.Tk, D = p.D, H = p.H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = int(blockIdx.x) * kBR;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t otok = int64_t(H) * D;
  const T* kbase = kv + int64_t(b) * Tk * p.ktok + int64_t(h / p.per_group) * 2 * D;
  const uint64_t mrow = mask_row(p, b, h);
  const int lr0 = warp * R;
  float* myS = sS + warp * R * kTile;

  load_rows(sQ, DMAX, kBR, DMAX, qkv + int64_t(b) * Tq * p.qtok + q_at(p, h), p.qtok, q0, Tq, D, p.qk_mul);
  load_rows(sdO, DMAX, kBR, DMAX, dout + int64_t(b) * Tq * otok + int64_t(h) * D, otok, q0, Tq, D, 1.0f);
  load_mask_rows(sQpos, sQdoc, p.q_pos, p.q_doc, b, Tq, q0, kBR, INT_MIN);
  load_lse_delta(sL, sD, lse, delta, bh, Tq, q0, kBR, -INFINITY);

  float dq[R][DPL];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int k = 0; k < DPL; ++k) dq[r][k] = 0.0f;

  for (int k0 = 0; k0 < Tk; k0 += kTile) {
    __syncthreads();
    load_mask_rows(sKpos, sKdoc, p.k_pos, p.k_doc, b, Tk, k0, kTile, INT_MAX);
    __syncthreads();
    if (!block_any_visible(sQpos, sQdoc, kBR, sKpos, sKdoc, kTile)) continue;
    load_rows(sK, LDK, kTile, DMAX, kbase, p.ktok, k0, Tk, D, 1.0f);
    load_rows(sV, LDK, kTile, DMAX, kbase + D, p.ktok, k0, Tk, D, 1.0f);
    __syncthreads();
    bool vis[R];
    bool any = false;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      // A query with lse = -inf sees no key anywhere (a consistent lse): no gradient through it.
      vis[r] = sees(sQpos, sQdoc, lr0 + r, sKpos, sKdoc, lane) && sL[lr0 + r] != -INFINITY;
      any |= vis[r];
    }
    if (!__any_sync(0xffffffffu, any)) continue;

    float s[R], dp[R];
    tile_dots2<R, DMAX>(s, dp, sQ, sdO, lr0, sK + lane * LDK, sV + lane * LDK, D);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int lr = lr0 + r;
      float ds = 0.0f;
      if (vis[r]) {
        const float pr = exp2f(s[r] - sL[lr]);
        const float z = p.p_drop > 0.0f ? drop_factor(p, mrow, sQpos[lr], sKpos[lane]) : 1.0f;
        ds = pr * (dp[r] * z - sD[lr]);
      }
      myS[r * kTile + lane] = ds;
    }
    __syncwarp();
    tile_accumulate<R, DPL, LDK>(dq, myS, sK, lane);  // dq[r, d] += sum_j ds[r, j] k_j[d]
    __syncwarp();
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = q0 + lr0 + r;
    if (i >= Tq) break;
    float* dst = dq_acc + (int64_t(b) * Tq + i) * otok + int64_t(h) * D;
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) dst[d] += dq[r][k] * p.scale;
    }
  }
}

// dkv_acc[b, j, g] += (scale sum ds_ij q_i, sum p_ij z_ij dO_i) over the group's heads in order
// and their visible queries.
template <class T, int DPL>
__global__ void __launch_bounds__(kDkdvWarps<DPL> * 32)
    block_dkdv_kernel(const T* dout, const T* qkv, const T* kv, const float* lse, const float* delta, float* dkv_acc,
                      BlockParams p) {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, R = kRowsPerWarp, W = kDkdvWarps<DPL>, BK = W * R;
  extern __shared__ float4 smem4[];
  float* sK = reinterpret_cast<float*>(smem4);  // [BK][DMAX], pre-scaled by qk_mul
  float* sV = sK + BK * DMAX;                   // [BK][DMAX]
  float* sQ = sV + BK * DMAX;                   // [kTile][LDK]
  float* sdO = sQ + kTile * LDK;                // [kTile][LDK]
  float* sP = sdO + kTile * LDK;                // [W][R][kTile]: p z
  float* sS = sP + W * R * kTile;               // [W][R][kTile]: ds
  float* sL = sS + W * R * kTile;               // [kTile]: lse * log2e
  float* sD = sL + kTile;                       // [kTile]: delta
  int* sKpos = reinterpret_cast<int*>(sD + kTile);
  int* sKdoc = sKpos + BK;
  int* sQpos = sKdoc + BK;
  int* sQdoc = sQpos + kTile;

  const int Tq = p.Tq, Tk = p.Tk, D = p.D, H = p.H, G = p.G;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int k0 = int(blockIdx.x) * BK;
  const int bg = blockIdx.y, b = bg / G, g = bg % G;
  const int64_t otok = int64_t(H) * D;
  const T* kbase = kv + int64_t(b) * Tk * p.ktok + int64_t(g) * 2 * D;
  const int lr0 = warp * R;  // the warp's first key in the block
  float* myP = sP + warp * R * kTile;
  float* myS = sS + warp * R * kTile;

  load_rows(sK, DMAX, BK, DMAX, kbase, p.ktok, k0, Tk, D, p.qk_mul);
  load_rows(sV, DMAX, BK, DMAX, kbase + D, p.ktok, k0, Tk, D, 1.0f);
  load_mask_rows(sKpos, sKdoc, p.k_pos, p.k_doc, b, Tk, k0, BK, INT_MAX);

  float dk[R][DPL], dv[R][DPL];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int k = 0; k < DPL; ++k) dk[r][k] = dv[r][k] = 0.0f;

  for (int h = g * p.per_group; h < (g + 1) * p.per_group; ++h) {  // the group's query heads, in order
    const int bh = b * H + h;
    const T* qbase = qkv + int64_t(b) * Tq * p.qtok + q_at(p, h);
    const T* obase = dout + int64_t(b) * Tq * otok + int64_t(h) * D;
    const uint64_t mrow = mask_row(p, b, h);
    for (int q0 = 0; q0 < Tq; q0 += kTile) {
      __syncthreads();  // the previous tile (or head) is no longer read
      load_mask_rows(sQpos, sQdoc, p.q_pos, p.q_doc, b, Tq, q0, kTile, INT_MIN);
      __syncthreads();
      if (!block_any_visible(sQpos, sQdoc, kTile, sKpos, sKdoc, BK)) continue;
      load_rows(sQ, LDK, kTile, DMAX, qbase, p.qtok, q0, Tq, D, 1.0f);
      load_rows(sdO, LDK, kTile, DMAX, obase, otok, q0, Tq, D, 1.0f);
      load_lse_delta(sL, sD, lse, delta, bh, Tq, q0, kTile, -INFINITY);
      __syncthreads();
      bool vis[R];
      bool any = false;
#pragma unroll
      for (int r = 0; r < R; ++r) {  // query q0 + lane against key k0 + lr0 + r
        vis[r] = sees(sQpos, sQdoc, lane, sKpos, sKdoc, lr0 + r) && sL[lane] != -INFINITY;
        any |= vis[r];
      }
      if (!__any_sync(0xffffffffu, any)) continue;

      float s[R], dp[R];
      tile_dots2<R, DMAX>(s, dp, sK, sV, lr0, sQ + lane * LDK, sdO + lane * LDK, D);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float pz = 0.0f, ds = 0.0f;
        if (vis[r]) {
          const float pr = exp2f(s[r] - sL[lane]);
          const float z = p.p_drop > 0.0f ? drop_factor(p, mrow, sQpos[lane], sKpos[lr0 + r]) : 1.0f;
          pz = pr * z;
          ds = pr * (dp[r] * z - sD[lane]);
        }
        myP[r * kTile + lane] = pz;
        myS[r * kTile + lane] = ds;
      }
      __syncwarp();
      tile_accumulate_dkdv<R, DPL, LDK>(dk, dv, sQ, sdO, myP, myS, lane);
      __syncwarp();
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int j = k0 + lr0 + r;
    if (j >= Tk) break;
    float* dst = dkv_acc + (int64_t(b) * Tk + j) * p.ktok + int64_t(g) * 2 * D;  // dk, then dv
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) {
        dst[d] += dk[r][k] * p.scale;
        dst[D + d] += dv[r][k];
      }
    }
  }
}

// ---- the small ops: a warp per merged row, a thread per element for the layouts ----

// out_acc, lse_acc <- the log-sum-exp merge with out_blk, lse_blk (as cpu/attention_block_parts.cpp).
__global__ void lse_merge_kernel(float* out_acc, float* lse_acc, const float* out_blk, const float* lse_blk,
                                 int64_t rows, int Tq, int H, int D) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    const int64_t bt = row / H;
    const int h = int(row - bt * H), b = int(bt / Tq), i = int(bt - int64_t(b) * Tq);
    const int64_t at = (int64_t(b) * H + h) * Tq + i;
    const float a = lse_acc[at], c = lse_blk[at];
    if (c == -INFINITY) continue;
    float wa = 0.0f, wc = 1.0f, merged = c;  // into a -inf row: the block's row
    if (a != -INFINITY) {
      merged = fmaxf(a, c) + log1pf(expf(-fabsf(a - c)));
      wa = expf(a - merged);
      wc = expf(c - merged);
    }
    float* o = out_acc + row * D;
    const float* ob = out_blk + row * D;
    for (int d = lane; d < D; d += 32) o[d] = a == -INFINITY ? ob[d] : wa * o[d] + wc * ob[d];
    __syncwarp();
    if (lane == 0) lse_acc[at] = merged;
  }
}

template <class T>
__global__ void split_kv_kernel(const T* qkv, T* kv, int64_t n, int slots, int D) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t btg = e / (2 * D), k = e - btg * 2 * D;  // k: the group's key then value dims
    kv[e] = qkv[(btg * slots + slots - 2) * D + k];
  }
}

template <class T>
__global__ void pack_grads_kernel(const float* dq, const float* dkv, T* dqkv, int64_t n, int slots, int D) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int hpg = slots - 2;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t btg = e / (int64_t(slots) * D), rest = e - btg * slots * D;
    const int slot = int(rest / D), c = int(rest - int64_t(slot) * D);
    const float v = slot < hpg ? dq[(btg * hpg + slot) * D + c] : dkv[(btg * 2 + slot - hpg) * D + c];
    dqkv[e] = from_float<T>(v);
  }
}

void check_grid(const char* op, int64_t B, int64_t heads, int64_t Tq, int64_t Tk) {
  MT_CHECK(B * heads <= 65535 && Tq <= (int64_t(1) << 30) && Tk <= (int64_t(1) << 30),
           "{}: B * heads = {}, Tq = {} or Tk = {} too large for the CUDA kernel", op, B * heads, Tq, Tk);
}

}  // namespace

void attention_block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const Tensor& out,
                             const Tensor& lse, const AttentionConfig& cfg, Stream s) {
  const int64_t B = qkv.size(0), Tq = qkv.size(1), Tk = kv.size(1), H = cfg.n_heads;
  if (B == 0 || Tq == 0) return;
  check_grid("attention_block_forward", B, H, Tq, Tk);
  CudaDeviceGuard guard(qkv.device().index);
  const BlockParams p = make_block_params(qkv, kv, mask, cfg);
  const dim3 grid(unsigned(ceil_div(Tq, kBR)), unsigned(B * H));
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_dpl(cfg.head_dim, [&](auto dpl) {
      constexpr int DPL = decltype(dpl)::value;
      constexpr size_t smem = forward_smem_bytes<DPL>();
      auto kernel = block_forward_kernel<T, DPL>;
      allow_smem(kernel, smem);
      kernel<<<grid, kWarps * 32, smem, stream_of(s)>>>(static_cast<const T*>(qkv.raw()),
                                                        static_cast<const T*>(kv.raw()), out.data<float>(),
                                                        lse.data<float>(), p);
    });
  });
  MT_CUDA_CHECK_LAUNCH();
}

void attention_block_backward(const Tensor& dout, const Tensor& qkv, const Tensor& kv, const Tensor& out,
                              const Tensor& lse, const AttentionMask& mask, const Tensor& dq_acc,
                              const Tensor& dkv_acc, const AttentionConfig& cfg, Stream s) {
  const int64_t B = qkv.size(0), Tq = qkv.size(1), Tk = kv.size(1), H = cfg.n_heads, G = cfg.groups();
  if (B == 0 || Tq == 0 || Tk == 0) return;
  check_grid("attention_block_backward", B, H, Tq, Tk);
  CudaDeviceGuard guard(qkv.device().index);
  const cudaStream_t st = stream_of(s);
  const BlockParams p = make_block_params(qkv, kv, mask, cfg);
  Tensor delta = Tensor::empty({B, H, Tq}, DType::F32, qkv.device());
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = static_cast<const T*>(dout.raw());
    const T* x = static_cast<const T*>(qkv.raw());
    const T* y = static_cast<const T*>(kv.raw());
    const int64_t rows = B * Tq * H;
    block_delta_kernel<T><<<unsigned(ceil_div(rows, 8)), 256, 0, st>>>(g, static_cast<const T*>(out.raw()),
                                                                      delta.data<float>(), rows, int(Tq), int(H),
                                                                      cfg.head_dim);
    MT_CUDA_CHECK_LAUNCH();
    dispatch_dpl(cfg.head_dim, [&](auto dpl) {
      constexpr int DPL = decltype(dpl)::value;
      constexpr int W = kDkdvWarps<DPL>;
      auto dkdv = block_dkdv_kernel<T, DPL>;
      allow_smem(dkdv, dkdv_smem_bytes<DPL>());
      dkdv<<<dim3(unsigned(ceil_div(Tk, W * kRowsPerWarp)), unsigned(B * G)), W * 32, dkdv_smem_bytes<DPL>(), st>>>(
          g, x, y, lse.data<float>(), delta.data<float>(), dkv_acc.data<float>(), p);
      MT_CUDA_CHECK_LAUNCH();
      auto dq = block_dq_kernel<T, DPL>;
      allow_smem(dq, dq_smem_bytes<DPL>());
      dq<<<dim3(unsigned(ceil_div(Tq, kBR)), unsigned(B * H)), kWarps * 32, dq_smem_bytes<DPL>(), st>>>(
          g, x, y, lse.data<float>(), delta.data<float>(), dq_acc.data<float>(), p);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

void attention_lse_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_blk, const Tensor& lse_blk,
                         Stream s) {
  const int64_t B = out_acc.size(0), Tq = out_acc.size(1), H = out_acc.size(2), D = out_acc.size(3);
  const int64_t rows = B * Tq * H;
  if (rows == 0) return;
  CudaDeviceGuard guard(out_acc.device().index);
  lse_merge_kernel<<<grid_size(rows * 32, 256), 256, 0, stream_of(s)>>>(
      out_acc.data<float>(), lse_acc.data<float>(), out_blk.data<float>(), lse_blk.data<float>(), rows, int(Tq),
      int(H), int(D));
  MT_CUDA_CHECK_LAUNCH();
}

void attention_split_kv(const Tensor& qkv, const Tensor& kv, Stream s) {
  const int64_t n = kv.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(qkv.device().index);
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    split_kv_kernel<T><<<grid_size(n, 256), 256, 0, stream_of(s)>>>(
        static_cast<const T*>(qkv.raw()), static_cast<T*>(kv.raw()), n, int(qkv.size(3)), int(qkv.size(4)));
  });
  MT_CUDA_CHECK_LAUNCH();
}

void attention_pack_grads(const Tensor& dq, const Tensor& dkv, const Tensor& dqkv, Stream s) {
  const int64_t n = dqkv.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(dqkv.device().index);
  dispatch_float(dqkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    pack_grads_kernel<T><<<grid_size(n, 256), 256, 0, stream_of(s)>>>(
        dq.data<float>(), dkv.data<float>(), static_cast<T*>(dqkv.raw()), n, int(dqkv.size(3)), int(dqkv.size(4)));
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
