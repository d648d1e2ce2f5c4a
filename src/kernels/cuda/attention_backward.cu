// Causal flash-attention backward (attention.h), fp32 math on CUDA cores, deterministic: every
// gradient element is owned by one thread and summed in a fixed order (no atomics).
//   D_i   = dO_i . O_i                                       (preprocess: a warp per row)
//   p_ij  = exp(scale q_i.k_j - lse_i),  dp_ij = dO_i . v_j,  z_ij = dropout factor (1 if none)
//   ds_ij = p_ij (dp_ij z_ij - D_i)
//   dv_j  = sum_{i>=j} p_ij z_ij dO_i,   dk_j = scale sum_{i>=j} ds_ij q_i     (kernel dkdv)
//   dq_i  = scale sum_{j<=i} ds_ij k_j                                          (kernel dq)
// dkdv: a block owns 8 keys per warp of one (b, query group) and, for each query head of the
// group in turn, walks the query tiles (32 queries, a lane each) from its first key to T, so a
// shared key's dk, dv sum the group's heads in registers in a fixed order (grouped-query
// attention; one head per group is multi-head attention); dq: a block owns 64 queries (8 per
// warp) of one head and walks the key tiles of its group up to its last query. Both recompute
// p from lse, so backward costs 7 units of B H T^2 D / 2 FLOPs against the minimal 5 (QK^T and
// dO V^T are done twice) — the price of determinism without a dq scratch. Global traffic: dq
// reads Q, dO once and K, V per tile visited; dkdv reads K, V once and Q, dO per tile visited
// (mostly L2 hits).
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

using namespace attn;

constexpr int kDqWarps = 8;
constexpr int kDqRows = kDqWarps * kRowsPerWarp;  // 64 queries per dq block

// dkdv: fewer warps for wide heads to keep shared memory (K, V of the block) in bounds.
template <int DPL> constexpr int kDkdvWarps = DPL <= 2 ? 8 : 4;

template <int DPL>
constexpr size_t dq_smem_bytes() {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4;
  return sizeof(float) * (2 * size_t(kDqRows) * DMAX + 2 * size_t(kTile) * LDK +
                          size_t(kDqWarps) * kRowsPerWarp * kTile + 2 * size_t(kDqRows));
}
template <int DPL>
constexpr size_t dkdv_smem_bytes() {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, W = kDkdvWarps<DPL>;
  return sizeof(float) * (2 * size_t(W) * kRowsPerWarp * DMAX + 2 * size_t(kTile) * LDK +
                          2 * size_t(W) * kRowsPerWarp * kTile + 2 * size_t(kTile));
}

// delta[bh, i] = dO_i . O_i; a warp per (token, head) row.
template <class T>
__global__ void attention_delta_kernel(const T* dout, const T* out, float* delta, int64_t rows, int Tn, int H, int D) {
  delta_rows(dout, out, delta, rows, Tn, H, D);
}

template <class T, int DPL>
__global__ void __launch_bounds__(kDqWarps * 32)
    attention_dq_kernel(const T* dout, const T* qkv, const float* lse, const float* delta, T* dqkv, Params p) {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, R = kRowsPerWarp;
  extern __shared__ float4 smem4[];
  float* sQ = reinterpret_cast<float*>(smem4);  // [kDqRows][DMAX], pre-scaled by qk_mul
  float* sdO = sQ + kDqRows * DMAX;             // [kDqRows][DMAX]
  float* sK = sdO + kDqRows * DMAX;             // [kTile][LDK]
  float* sV = sK + kTile * LDK;                 // [kTile][LDK]
  float* sS = sV + kTile * LDK;                 // [kDqWarps][R][kTile]: ds
  float* sL = sS + kDqWarps * R * kTile;        // [kDqRows]: lse * log2e
  float* sD = sL + kDqRows;                     // [kDqRows]: delta

  const int Tn = p.T, D = p.D, H = p.H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n_qt = (Tn + kDqRows - 1) / kDqRows;
  const int q0 = (n_qt - 1 - int(blockIdx.x)) * kDqRows;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t tok = p.tok, otok = int64_t(H) * D;
  const int64_t tokens = int64_t(b) * Tn * tok;  // sample b in qkv and dqkv
  const T* kbase = qkv + tokens + k_at(p, h / p.per_group);
  const uint64_t mrow = mask_row(p, b, h);
  const int row0 = q0 + warp * R;
  float* myS = sS + warp * R * kTile;

  load_rows(sQ, DMAX, kDqRows, DMAX, qkv + tokens + q_at(p, h), tok, q0, Tn, D, p.qk_mul);
  load_rows(sdO, DMAX, kDqRows, DMAX, dout + (int64_t(b) * Tn * H + h) * D, otok, q0, Tn, D, 1.0f);
  load_lse_delta(sL, sD, lse, delta, bh, Tn, q0, kDqRows, 0.0f);

  float dq[R][DPL];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int k = 0; k < DPL; ++k) dq[r][k] = 0.0f;

  const int q_end = min(q0 + kDqRows, Tn);
  const int n_kt = (q_end + kTile - 1) / kTile;
  for (int kt = 0; kt < n_kt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();
    load_rows(sK, LDK, kTile, DMAX, kbase, tok, k0, Tn, D, 1.0f);
    load_rows(sV, LDK, kTile, DMAX, kbase + D, tok, k0, Tn, D, 1.0f);
    __syncthreads();
    if (row0 >= Tn || row0 + R - 1 < k0) continue;

    float s[R], dp[R];
    tile_dots2<R, DMAX>(s, dp, sQ, sdO, warp * R, sK + lane * LDK, sV + lane * LDK, D);
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = row0 + r, lr = warp * R + r;
      const float pr = (j <= i && j < Tn) ? exp2f(s[r] - sL[lr]) : 0.0f;
      const float z = p.p_drop > 0.0f ? drop_factor(p, mrow, i, j) : 1.0f;
      myS[r * kTile + lane] = pr * (dp[r] * z - sD[lr]);
    }
    __syncwarp();
    tile_accumulate<R, DPL, LDK>(dq, myS, sK, lane);  // dq[r, d] += sum_j ds[r, j] k_j[d]
    __syncwarp();
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = row0 + r;
    if (i >= Tn) break;
    T* dst = dqkv + tokens + int64_t(i) * tok + q_at(p, h);
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) dst[d] = from_float<T>(dq[r][k] * p.scale);
    }
  }
}

template <class T, int DPL>
__global__ void __launch_bounds__(kDkdvWarps<DPL> * 32)
    attention_dkdv_kernel(const T* dout, const T* qkv, const float* lse, const float* delta, T* dqkv, Params p) {
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

  const int Tn = p.T, D = p.D, H = p.H, G = H / p.per_group;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int k0 = int(blockIdx.x) * BK;  // low keys see the most queries: they run first
  const int bg = blockIdx.y, b = bg / G, g = bg % G;
  const int64_t tok = p.tok, otok = int64_t(H) * D;
  const int64_t tokens = int64_t(b) * Tn * tok;  // sample b in qkv and dqkv
  const T* kbase = qkv + tokens + k_at(p, g);
  const int row0 = k0 + warp * R;  // this warp's first key
  float* myP = sP + warp * R * kTile;
  float* myS = sS + warp * R * kTile;

  load_rows(sK, DMAX, BK, DMAX, kbase, tok, k0, Tn, D, p.qk_mul);
  load_rows(sV, DMAX, BK, DMAX, kbase + D, tok, k0, Tn, D, 1.0f);

  float dk[R][DPL], dv[R][DPL];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int k = 0; k < DPL; ++k) dk[r][k] = dv[r][k] = 0.0f;

  const int n_qt = (Tn + kTile - 1) / kTile;
  for (int h = g * p.per_group; h < (g + 1) * p.per_group; ++h) {  // the group's query heads, in order
    const int bh = b * H + h;
    const T* qbase = qkv + tokens + q_at(p, h);
    const T* obase = dout + (int64_t(b) * Tn * H + h) * D;
    const uint64_t mrow = mask_row(p, b, h);
    for (int qt = k0 / kTile; qt < n_qt; ++qt) {
      const int q0 = qt * kTile;
      __syncthreads();  // the previous tile (or head) is no longer read
      load_rows(sQ, LDK, kTile, DMAX, qbase, tok, q0, Tn, D, 1.0f);
      load_rows(sdO, LDK, kTile, DMAX, obase, otok, q0, Tn, D, 1.0f);
      load_lse_delta(sL, sD, lse, delta, bh, Tn, q0, kTile, 0.0f);
      __syncthreads();
      if (row0 >= Tn || row0 > q0 + kTile - 1) continue;  // no valid key, or every query of the tile precedes them

      float s[R], dp[R];
      tile_dots2<R, DMAX>(s, dp, sK, sV, warp * R, sQ + lane * LDK, sdO + lane * LDK, D);
      const int i = q0 + lane;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int j = row0 + r;
        const float pr = (i >= j && i < Tn) ? exp2f(s[r] - sL[lane]) : 0.0f;
        const float z = p.p_drop > 0.0f ? drop_factor(p, mrow, i, j) : 1.0f;
        myP[r * kTile + lane] = pr * z;
        myS[r * kTile + lane] = pr * (dp[r] * z - sD[lane]);
      }
      __syncwarp();
      tile_accumulate_dkdv<R, DPL, LDK>(dk, dv, sQ, sdO, myP, myS, lane);
      __syncwarp();
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int j = row0 + r;
    if (j >= Tn) break;
    T* dst = dqkv + tokens + int64_t(j) * tok + k_at(p, g);  // dk, then dv
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) {
        dst[d] = from_float<T>(dk[r][k] * p.scale);
        dst[D + d] = from_float<T>(dv[r][k]);
      }
    }
  }
}

}  // namespace

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                        const Tensor& dqkv, const AttentionConfig& cfg, Stream s) {
  const int64_t B = qkv.size(0), Tn = qkv.size(1), H = cfg.n_heads, G = cfg.groups(), D = cfg.head_dim;
  if (B == 0 || Tn == 0) return;
  MT_CHECK(B * H <= 65535 && Tn <= (int64_t(1) << 30), "attention: B*H = {} or T = {} too large", B * H, Tn);
  CudaDeviceGuard guard(qkv.device().index);
  const cudaStream_t st = stream_of(s);
  const Params p = make_params(Tn, cfg);
  Tensor delta = Tensor::empty({B, H, Tn}, DType::F32, qkv.device());
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = static_cast<const T*>(dout.raw());
    const T* x = static_cast<const T*>(qkv.raw());
    T* dx = static_cast<T*>(dqkv.raw());
    const int64_t rows = B * Tn * H;
    attention_delta_kernel<T><<<unsigned(ceil_div(rows, 8)), 256, 0, st>>>(g, static_cast<const T*>(out.raw()),
                                                                          delta.data<float>(), rows, int(Tn), int(H),
                                                                          int(D));
    MT_CUDA_CHECK_LAUNCH();
    dispatch_dpl(int(D), [&](auto dpl) {
      constexpr int DPL = decltype(dpl)::value;
      constexpr int W = kDkdvWarps<DPL>;
      auto dkdv = attention_dkdv_kernel<T, DPL>;
      allow_smem(dkdv, dkdv_smem_bytes<DPL>());
      dkdv<<<dim3(unsigned(ceil_div(Tn, W * kRowsPerWarp)), unsigned(B * G)), W * 32, dkdv_smem_bytes<DPL>(), st>>>(
          g, x, lse.data<float>(), delta.data<float>(), dx, p);
      MT_CUDA_CHECK_LAUNCH();
      auto dq = attention_dq_kernel<T, DPL>;
      allow_smem(dq, dq_smem_bytes<DPL>());
      dq<<<dim3(unsigned(ceil_div(Tn, kDqRows)), unsigned(B * H)), kDqWarps * 32, dq_smem_bytes<DPL>(), st>>>(
          g, x, lse.data<float>(), delta.data<float>(), dx, p);
      MT_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mt::cuda
