// Causal flash-attention forward (attention.h), fp32 math on CUDA cores.
// A block owns kBR = 64 query rows of one (b, h): 8 warps x 8 rows. It walks the key tiles of
// 32 keys up to its last query (causal), staging K and V in shared memory, and per row keeps
// an online softmax: running max m, per-lane partial sum l, output accumulator o (lane owns
// dims lane + 32 k), rescaled when m grows.
//   scores: s2[r, j] = (q_r * scale * log2e) . k_j  (lane j; float4 shared loads)
//   o[r, :] = o * exp2(m - m') + sum_j exp2(s2 - m') z_rj v_j  (p staged per warp in shared)
// Never stores a [T, T] matrix. Saves out and lse = (m + log2 l) ln 2 per row.
// Grouped-query attention only changes where a block reads: K and V of its head's group.
// Cost: 2 B H T^2 D causal FLOPs (half of dense), SIMT fp32: expect ~15-25 TFLOP/s on H100, far
// below a tensor-core kernel (the next step for speed). Global traffic: each block reads its Q
// once and K, V of the tiles it visits (mostly L2 hits across the blocks of one head).
// Blocks are launched heaviest (last query tile) first.
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

using namespace attn;

constexpr int kWarps = 8;
constexpr int kBR = kWarps * kRowsPerWarp;  // 64 queries per block

template <int DPL>
constexpr size_t forward_smem_bytes() {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4;
  return sizeof(float) * (size_t(kBR) * DMAX + size_t(kTile) * LDK + size_t(kTile) * DMAX +
                          size_t(kWarps) * kRowsPerWarp * kTile);
}

template <class T, int DPL>
__global__ void __launch_bounds__(kWarps * 32) attention_forward_kernel(const T* qkv, T* out, float* lse, Params p) {
  constexpr int DMAX = 32 * DPL, LDK = DMAX + 4, R = kRowsPerWarp;
  extern __shared__ float4 smem4[];
  float* sQ = reinterpret_cast<float*>(smem4);  // [kBR][DMAX], pre-scaled
  float* sK = sQ + kBR * DMAX;                  // [kTile][LDK]
  float* sV = sK + kTile * LDK;                 // [kTile][DMAX]
  float* sP = sV + kTile * DMAX;                // [kWarps][R][kTile]

  const int Tn = p.T, D = p.D, H = p.H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n_qt = (Tn + kBR - 1) / kBR;
  const int q0 = (n_qt - 1 - int(blockIdx.x)) * kBR;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int64_t tok = p.tok;
  const T* tokens = qkv + int64_t(b) * Tn * tok;  // sample b
  const T* kbase = tokens + k_at(p, h / p.per_group);
  const uint64_t mrow = mask_row(p, b, h);
  const int row0 = q0 + warp * R;  // this warp's first query
  float* myP = sP + warp * R * kTile;
  const float* myQ = sQ + warp * R * DMAX;

  load_rows(sQ, DMAX, kBR, DMAX, tokens + q_at(p, h), tok, q0, Tn, D, p.qk_mul);

  float o[R][DPL], m[R], l[R];
  softmax_init(o, m, l);

  const int q_end = min(q0 + kBR, Tn);
  const int n_kt = (q_end + kTile - 1) / kTile;
  for (int kt = 0; kt < n_kt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // the previous tile is no longer read
    load_rows(sK, LDK, kTile, DMAX, kbase, tok, k0, Tn, D, 1.0f);
    load_rows(sV, DMAX, kTile, DMAX, kbase + D, tok, k0, Tn, D, 1.0f);
    __syncthreads();
    if (row0 >= Tn || row0 + R - 1 < k0) continue;  // no valid row, or every key of the tile is in the future

    // Scores of key j = k0 + lane against the warp's R rows.
    float s[R];
    tile_dots<R, DMAX>(s, myQ, 0, sK + lane * LDK, D);
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = row0 + r;
      const float sr = (j <= i && j < Tn) ? s[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sr));  // finite: key 0 is in every row's first tile
      float pr = softmax_update(m[r], l[r], o[r], sr, m_new);
      if (p.p_drop > 0.0f) pr *= drop_factor(p, mrow, i, j);
      myP[r * kTile + lane] = pr;
    }
    __syncwarp();
    // o[r, d] += sum_j P[r, j] V[j, d] for the lane's dims d = lane + 32 k.
    tile_accumulate<R, DPL, DMAX>(o, myP, sV, lane);
    __syncwarp();
  }

  if (row0 >= Tn) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = row0 + r;
    const float lt = warp_sum(l[r]);
    if (i >= Tn) continue;
    const float inv = 1.0f / lt;
    T* orow = out + ((int64_t(b) * Tn + i) * H + h) * D;
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      if (d < D) orow[d] = from_float<T>(o[r][k] * inv);
    }
    if (lane == 0) lse[int64_t(bh) * Tn + i] = (m[r] + log2f(lt)) * kLn2;
  }
}

}  // namespace

void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg,
                       Stream s) {
  const int64_t B = qkv.size(0), Tn = qkv.size(1), H = cfg.n_heads, D = cfg.head_dim;
  if (B == 0 || Tn == 0) return;
  MT_CHECK(B * H <= 65535 && Tn <= (int64_t(1) << 30), "attention: B*H = {} or T = {} too large", B * H, Tn);
  CudaDeviceGuard guard(qkv.device().index);
  const Params p = make_params(Tn, cfg);
  const dim3 grid(unsigned(ceil_div(Tn, kBR)), unsigned(B * H));
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_dpl(int(D), [&](auto dpl) {
      constexpr int DPL = decltype(dpl)::value;
      constexpr size_t smem = forward_smem_bytes<DPL>();
      auto kernel = attention_forward_kernel<T, DPL>;
      allow_smem(kernel, smem);
      kernel<<<grid, kWarps * 32, smem, stream_of(s)>>>(static_cast<const T*>(qkv.raw()), static_cast<T*>(out.raw()),
                                                        lse.data<float>(), p);
    });
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
