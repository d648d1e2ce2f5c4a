#pragma once
// Shared by the flash-attention kernels (attention_forward.cu, attention_backward.cu,
// attention_block.cu; their shared tile loops: attention_tiles.cuh).
// Layouts (attention.h): qkv [B, T, G, H/G + 2, D] (query head h reads the key and value heads
// of group h / (H/G)), out/dout [B, T, H, D], lse fp32 [B, H, T].
// The kernels compute in fp32 on CUDA cores (SIMT): tiles of rows are staged in shared memory
// as fp32 with D padded to DMAX = 32 * DPL (DPL = dims per lane, 1..4, so head_dim <= 128), and
// a lane owns either one key/query of a 32-wide tile (for dot products) or DPL output dims.
// Scores are kept in the log2 domain: q is pre-multiplied by scale * log2(e), so
// p = exp2(s2 - m2); lse (natural log) = (m2 + log2(l)) * ln(2).
#include "core/rng.h"
#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"

namespace mt::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kRowsPerWarp = 8;  // query rows (forward, dq) or key rows (dk/dv) a warp owns
constexpr int kTile = 32;        // keys (forward, dq) or queries (dk/dv) per inner tile: a lane each

struct Params {
  int T, H, D;
  int per_group;   // query heads per group, H/G
  int64_t tok;     // qkv elements per token, (H + 2G) D
  float qk_mul;    // scale * log2(e), scale = 1/sqrt(D)
  float scale;     // 1/sqrt(D)
  float p_drop;    // attention dropout probability (0: none)
  float inv_keep;  // 1 / (1 - p_drop)
  uint64_t seed, stream;
  int64_t batch_offset;       // the dropout mask's global coordinates (attention.h)
  int head_offset, mask_heads;
};

inline Params make_params(int64_t Tn, const AttentionConfig& cfg) {
  Params p;
  p.T = int(Tn);
  p.H = cfg.n_heads;
  p.D = cfg.head_dim;
  p.per_group = cfg.heads_per_group();
  p.tok = int64_t(cfg.n_heads + 2 * cfg.groups()) * cfg.head_dim;
  p.scale = cfg.scale();
  p.qk_mul = p.scale * kLog2e;
  p.p_drop = cfg.dropout_p;
  p.inv_keep = 1.0f / (1.0f - cfg.dropout_p);
  p.seed = cfg.seed;
  p.stream = cfg.stream;
  p.batch_offset = cfg.batch_offset;
  p.head_offset = cfg.head_offset;
  p.mask_heads = cfg.mask_heads();
  return p;
}

// Offsets within a token of qkv of query head h, and of group g's key head (its value head follows).
// P: Params or attention_block.cu's BlockParams (the same field names).
template <class P>
__device__ __forceinline__ int64_t q_at(const P& p, int h) {
  return (int64_t(h / p.per_group) * (p.per_group + 2) + h % p.per_group) * p.D;
}
__device__ __forceinline__ int64_t k_at(const Params& p, int g) {
  return (int64_t(g) * (p.per_group + 2) + p.per_group) * p.D;
}

// Row b' H' + h' of head (b, h) in the dropout mask's counter ((b' H' + h') T + i) T + j.
template <class P>
__device__ __forceinline__ uint64_t mask_row(const P& p, int b, int h) {
  return uint64_t(p.batch_offset + b) * uint64_t(p.mask_heads) + uint64_t(p.head_offset + h);
}

// Dropout factor of score (i, j) of the head with mask row `row`: 0 or 1/(1-p) (attention.h).
__device__ __forceinline__ float drop_factor(const Params& p, uint64_t row, int i, int j) {
  const uint64_t idx = (row * uint64_t(p.T) + uint64_t(i)) * uint64_t(p.T) + uint64_t(j);
  return philox_uniform(p.seed, p.stream, idx) > p.p_drop ? p.inv_keep : 0.0f;
}

// Stages rows [r0, r0 + rows) of a strided [T, D] view into shared fp32 dst[rows][ld] times
// `mul`, zero-filling dims D..dmax-1 and rows >= T. Coalesced: consecutive threads take
// consecutive elements of a row.
template <class T>
__device__ __forceinline__ void load_rows(float* dst, int ld, int rows, int dmax, const T* base, int64_t row_stride,
                                          int r0, int Tn, int D, float mul) {
  for (int idx = threadIdx.x; idx < rows * dmax; idx += blockDim.x) {
    const int r = idx / dmax, d = idx - r * dmax;
    float v = 0.0f;
    if (r0 + r < Tn && d < D) v = to_float(base[int64_t(r0 + r) * row_stride + d]) * mul;
    dst[r * ld + d] = v;
  }
}

__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
__device__ __forceinline__ float comp(float4 v, int u) { return u == 0 ? v.x : u == 1 ? v.y : u == 2 ? v.z : v.w; }
__device__ __forceinline__ float4 lds4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// Sets the dynamic shared memory limit of `kernel` (needed above 48 KiB).
template <class K>
void allow_smem(K kernel, size_t bytes) {
  MT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Calls fn(std::integral_constant<int, DPL>) for head_dim D (DPL = ceil(D / 32)).
template <class Fn>
void dispatch_dpl(int D, Fn&& fn) {
  MT_CHECK(D >= 1 && D <= 128, "attention: head_dim {} is not supported by the CUDA kernels (1..128)", D);
  switch ((D + 31) / 32) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    default: fn(std::integral_constant<int, 4>{}); break;
  }
}

}  // namespace mt::cuda::attn
