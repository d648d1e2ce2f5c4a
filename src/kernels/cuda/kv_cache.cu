// The key/value cache on CUDA (kv_cache.h).
//
// Append: one thread per element of the new tokens' key and value heads, copied to their slots.
//
// Attention, split over the keys (flash-decoding): block (token (b, t), group g, chunk c) takes
// the group's H/G query heads of the token (pre-scaled into shared memory) and keys
// [c K, min((c + 1) K, start[b] + t + 1)) of sequence b's cache, K = 64 slots (more for caches of
// over 16384 slots, so at most 256 chunks). Each warp takes one key at a time and dots it with
// every query head of the group (the key is read once for the H/G heads); then one warp per head
// forms m = max s, p = e^(s - m), l = sum p over the chunk, and the block's threads, one per
// (head, channel), sum p_j v_j with consecutive threads on consecutive channels (coalesced rows
// of V). With one chunk the block writes out = acc / l; otherwise it writes its partial (acc, m,
// l) in fp32 and a second kernel combines a head's chunks:
//   M = max_c m_c,  out = sum_c e^(m_c - M) acc_c / sum_c e^(m_c - M) l_c.
// Chunks past a token's last key exit at once, so the grid can be sized by the cache's capacity
// (not by the current lengths, which only the device knows). Bytes: each cached key and value
// row of a group is read once per token, the queries once; the partials are
// B T H (D + 2) fp32 per chunk in use.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_cache.h"

namespace mt::cuda {
namespace {

constexpr int kAppendBlock = 256;
constexpr int kBlock = 128;
constexpr int kHeadsPerPass = 8;  // query heads whose scores a warp accumulates at once
constexpr int64_t kChunkUnit = 64;
constexpr int64_t kMaxChunks = 256;

template <class T>
__global__ void append_kernel(const T* qkv, const int32_t* start, T* kc, T* vc, int64_t Tn, int64_t G, int64_t S,
                              int64_t D, int64_t slots, int64_t items) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t w = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; w < items; w += stride) {
    // w = ((b T + t) G + g) 2 D + which D + d: key (which 0) and value (1) heads are adjacent in qkv.
    const int64_t e = w % (2 * D), btg = w / (2 * D), g = btg % G, bt = btg / G;
    const int64_t b = bt / Tn, slot = int64_t(start[b]) + bt % Tn;
    if (slot >= slots) continue;
    const T x = qkv[(btg * S + S - 2) * D + e];
    T* dst = e < D ? kc : vc;
    dst[((b * slots + slot) * G + g) * D + e % D] = x;
  }
}

struct Dims {
  int64_t Tn, H, G, D, slots;
  int per_group;   // query heads per group (Q)
  int chunk;       // keys per chunk (K)
  int chunks;      // chunks per token
  float scale;
};

__device__ __forceinline__ int64_t keys_of(const int32_t* start, const Dims& c, int64_t bt) {
  return int64_t(start[bt / c.Tn]) + bt % c.Tn + 1;
}

template <class T>
__global__ void __launch_bounds__(kBlock)
    attention_kernel(const T* qkv, const T* kc, const T* vc, const int32_t* start, T* out, float* part_o,
                     float* part_ml, Dims c) {
  extern __shared__ float smem[];
  const int Q = c.per_group, D = int(c.D), K = c.chunk;
  float* q_s = smem;             // [Q][D], scaled
  float* p_s = q_s + Q * D;      // [Q][K]: scores, then e^(s - m)
  float* m_s = p_s + Q * K;      // [Q]
  float* l_s = m_s + Q;          // [Q]
  const int64_t bt = blockIdx.x, g = blockIdx.y, chunk = blockIdx.z;
  const int64_t k0 = chunk * K;
  const int64_t keys = keys_of(start, c, bt);
  if (k0 >= keys) return;  // the combine reads only chunks that hold keys
  const int n = int(min(int64_t(K), keys - k0));
  const int64_t b = bt / c.Tn, row_stride = c.G * c.D;  // between consecutive slots of one group
  const T* q = qkv + (bt * c.G + g) * (Q + 2) * c.D;     // the group's Q query heads, [Q][D]
  for (int i = threadIdx.x; i < Q * D; i += blockDim.x) q_s[i] = to_float(q[i]) * c.scale;
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const T* kbase = kc + ((b * c.slots + k0) * c.G + g) * c.D;
  for (int j = warp; j < n; j += nwarps) {
    const T* k = kbase + j * row_stride;
    for (int h0 = 0; h0 < Q; h0 += kHeadsPerPass) {
      float acc[kHeadsPerPass] = {};
      for (int d = lane; d < D; d += 32) {
        const float kd = to_float(k[d]);
#pragma unroll
        for (int i = 0; i < kHeadsPerPass; ++i)
          if (h0 + i < Q) acc[i] += q_s[(h0 + i) * D + d] * kd;
      }
#pragma unroll
      for (int i = 0; i < kHeadsPerPass; ++i) {
        const float s = warp_sum(acc[i]);
        if (lane == 0 && h0 + i < Q) p_s[(h0 + i) * K + j] = s;
      }
    }
  }
  __syncthreads();

  for (int i = warp; i < Q; i += nwarps) {
    float* p = p_s + i * K;
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, p[j]);
    m = warp_max(m);
    float l = 0.0f;
    for (int j = lane; j < n; j += 32) {
      const float e = expf(p[j] - m);
      p[j] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      m_s[i] = m;
      l_s[i] = l;
    }
  }
  __syncthreads();

  const T* vbase = vc + ((b * c.slots + k0) * c.G + g) * c.D;
  for (int idx = threadIdx.x; idx < Q * D; idx += blockDim.x) {
    const int i = idx / D, d = idx - i * D;
    const float* p = p_s + i * K;
    float acc = 0.0f;
    for (int j = 0; j < n; ++j) acc += p[j] * to_float(vbase[j * row_stride + d]);
    const int64_t row = bt * c.H + g * Q + i;  // (token, head)
    if (c.chunks == 1) {
      out[row * c.D + d] = from_float<T>(acc / l_s[i]);
    } else {
      part_o[(row * c.chunks + chunk) * c.D + d] = acc;
      if (d == 0) {
        part_ml[(row * c.chunks + chunk) * 2] = m_s[i];
        part_ml[(row * c.chunks + chunk) * 2 + 1] = l_s[i];
      }
    }
  }
}

// One block per (token, head): combines the chunks that hold keys.
template <class T>
__global__ void combine_kernel(const float* part_o, const float* part_ml, const int32_t* start, T* out, Dims c) {
  const int64_t row = blockIdx.x, bt = row / c.H;
  const int used = int((keys_of(start, c, bt) + c.chunk - 1) / c.chunk);
  const float* ml = part_ml + row * c.chunks * 2;
  float M = -INFINITY;
  for (int ch = 0; ch < used; ++ch) M = fmaxf(M, ml[2 * ch]);
  float den = 0.0f;
  for (int ch = 0; ch < used; ++ch) den += expf(ml[2 * ch] - M) * ml[2 * ch + 1];
  const float inv = 1.0f / den;
  for (int d = threadIdx.x; d < c.D; d += blockDim.x) {
    float num = 0.0f;
    for (int ch = 0; ch < used; ++ch) num += expf(ml[2 * ch] - M) * part_o[(row * c.chunks + ch) * c.D + d];
    out[row * c.D + d] = from_float<T>(num * inv);
  }
}

}  // namespace

void kv_cache_append(const Tensor& qkv, const Tensor& start, const Tensor& k_cache, const Tensor& v_cache, Stream s) {
  const int64_t B = qkv.size(0), Tn = qkv.size(1), G = qkv.size(2), S = qkv.size(3), D = qkv.size(4);
  const int64_t items = B * Tn * G * 2 * D;
  if (items == 0) return;
  CudaDeviceGuard guard(qkv.device().index);
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    append_kernel<T><<<grid_size(items, kAppendBlock), kAppendBlock, 0, stream_of(s)>>>(
        static_cast<const T*>(qkv.raw()), start.data<int32_t>(), static_cast<T*>(k_cache.raw()),
        static_cast<T*>(v_cache.raw()), Tn, G, S, D, k_cache.size(1), items);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void kv_cache_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                        const Tensor& out, const AttentionConfig& cfg, Stream s) {
  const int64_t B = qkv.size(0), Tn = qkv.size(1), slots = k_cache.size(1);
  if (B * Tn == 0) return;
  Dims c{};
  c.Tn = Tn;
  c.H = cfg.n_heads;
  c.G = cfg.groups();
  c.D = cfg.head_dim;
  c.slots = slots;
  c.per_group = int(c.H / c.G);
  c.chunk = int(kChunkUnit * ceil_div(slots, kChunkUnit * kMaxChunks));
  c.chunks = int(ceil_div(slots, c.chunk));
  c.scale = cfg.scale();
  const size_t smem = sizeof(float) * size_t(c.per_group) * size_t(c.D + c.chunk + 2);
  MT_CHECK(smem <= 48 * 1024, "kv_cache_attention: {} query heads per group x (head dim {} + {} keys) need {} bytes "
           "of shared memory (at most 49152)", c.per_group, c.D, c.chunk, smem);
  CudaDeviceGuard guard(qkv.device().index);
  Tensor part_o, part_ml;
  if (c.chunks > 1) {
    part_o = Tensor::empty({B * Tn * c.H * c.chunks * c.D}, DType::F32, qkv.device());
    part_ml = Tensor::empty({B * Tn * c.H * c.chunks * 2}, DType::F32, qkv.device());
  }
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const dim3 grid(unsigned(B * Tn), unsigned(c.G), unsigned(c.chunks));
    float* po = c.chunks > 1 ? part_o.data<float>() : nullptr;
    float* pml = c.chunks > 1 ? part_ml.data<float>() : nullptr;
    attention_kernel<T><<<grid, kBlock, smem, stream_of(s)>>>(
        static_cast<const T*>(qkv.raw()), static_cast<const T*>(k_cache.raw()), static_cast<const T*>(v_cache.raw()),
        start.data<int32_t>(), static_cast<T*>(out.raw()), po, pml, c);
    MT_CUDA_CHECK_LAUNCH();
    if (c.chunks > 1) {
      const int threads = int(c.D < 32 ? 32 : (c.D > 256 ? 256 : c.D));
      combine_kernel<T><<<unsigned(B * Tn * c.H), threads, 0, stream_of(s)>>>(po, pml, start.data<int32_t>(),
                                                                              static_cast<T*>(out.raw()), c);
      MT_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace mt::cuda
