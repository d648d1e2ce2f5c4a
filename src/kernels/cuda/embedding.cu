// Token (+ learned position) embedding.
//   forward:  out[n, :] = wte[ids[n] - vocab_start, :] + wpe[n % T, :]  (zero for tokens outside
//             this shard's vocabulary). A thread per 16-byte pack of out: reads one wte row and
//             one wpe row per token, writes one out row.
//   backward: dwte[v, :] += sum of dout[n, :] over tokens n with ids[n] - vocab_start == v,
//             dwpe[t, :] += sum_b dout[b, t, :].
// Backward is deterministic without float atomics: the (row, token) pairs are sorted by row with
// a stable radix sort (CUB), which keeps each row's tokens in token order; a block per distinct
// row then walks its tokens in that order, threads across 16-byte packs of channels. Each gradient
// element is summed exactly as the CPU backend sums it (in token order, starting from the
// accumulator), so the two agree bit for bit. dout is read once (plus one more pass for dwpe); the
// sort moves 16 bytes per token. Load balance follows the token histogram: a row that occurs k
// times costs its block k row reads, issued kBatch at a time.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;

template <class T, bool VEC>
__global__ void embedding_forward_kernel(const int32_t* ids, const T* wte, int64_t V, const T* wpe,
                                         int64_t vocab_start, T* out, int64_t tokens, int64_t Tn, int64_t C) {
  constexpr int P = VEC ? Pack<T>::N : 1;
  const int64_t packs_per_row = C / P, total = tokens * packs_per_row;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / packs_per_row, c = (i - n * packs_per_row) * P;
    const int64_t row = int64_t(ids[n]) - vocab_start;
    const bool in_shard = row >= 0 && row < V;
    const T* w = wte + row * C + c;
    const T* p = wpe ? wpe + (n % Tn) * C + c : nullptr;
    if constexpr (VEC) {
      Pack<T> o;
      Pack<T> wv, pv;
      if (in_shard) wv = load_pack(w);
      if (p) pv = load_pack(p);
#pragma unroll
      for (int k = 0; k < P; ++k)
        o.v[k] = from_float<T>((in_shard ? to_float(wv.v[k]) : 0.0f) + (p ? to_float(pv.v[k]) : 0.0f));
      store_pack(out + n * C + c, o);
    } else {
      out[n * C + c] = from_float<T>((in_shard ? to_float(*w) : 0.0f) + (p ? to_float(*p) : 0.0f));
    }
  }
}

// keys[n] = the wte row of token n, or V (sorted last, skipped) outside the shard; vals[n] = n.
__global__ void embedding_keys_kernel(const int32_t* ids, int64_t tokens, int64_t vocab_start, int64_t V,
                                      uint32_t* keys, int32_t* vals) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; n < tokens; n += stride) {
    const int64_t row = int64_t(ids[n]) - vocab_start;
    keys[n] = row >= 0 && row < V ? uint32_t(row) : uint32_t(V);
    vals[n] = int32_t(n);
  }
}

// Block k owns the run of equal keys starting at sorted position k (if one starts there). The
// block finds the run's end together (a block of keys per step) and each thread owns 16-byte packs
// of the row's columns. Its tokens are summed in order, kBatch rows' loads issued before their adds:
// a word that occurs hundreds of times in a batch of real text (",", "the") costs hundreds / kBatch
// memory latencies instead of one per occurrence, and the sum is the same, bit for bit.
constexpr int kBatch = 8;

template <class T, bool VEC>
__global__ void embedding_dwte_kernel(const T* dout, const uint32_t* keys, const int32_t* tokens_sorted,
                                      int64_t tokens, int64_t V, int64_t C, float* dwte) {
  const int64_t k0 = blockIdx.x;
  const uint32_t key = keys[k0];
  if (key >= uint32_t(V) || (k0 > 0 && keys[k0 - 1] == key)) return;
  // Keys are sorted, so the run's keys in each step's window are a prefix of it.
  int64_t k1 = k0 + 1;
  for (;;) {
    const int64_t k = k1 + threadIdx.x;
    const int in_run = __syncthreads_count(k < tokens && keys[k] == key);
    k1 += in_run;
    if (in_run < int(blockDim.x)) break;
  }
  constexpr int P = VEC ? Pack<T>::N : 1;
  float* dst = dwte + int64_t(key) * C;
  for (int64_t c = int64_t(threadIdx.x) * P; c < C; c += int64_t(blockDim.x) * P) {
    float acc[P];
#pragma unroll
    for (int p = 0; p < P; ++p) acc[p] = dst[c + p];
    for (int64_t k = k0; k < k1; k += kBatch) {
      const int n = k1 - k < kBatch ? int(k1 - k) : kBatch;
      Pack<T> v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (j >= n) break;
        const T* src = dout + int64_t(tokens_sorted[k + j]) * C + c;
        if constexpr (VEC) v[j] = load_pack(src);
        else v[j].v[0] = *src;
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (j >= n) break;
#pragma unroll
        for (int p = 0; p < P; ++p) acc[p] += to_float(v[j].v[p]);
      }
    }
#pragma unroll
    for (int p = 0; p < P; ++p) dst[c + p] = acc[p];
  }
}

template <class T>
__global__ void embedding_dwpe_kernel(const T* dout, int64_t B, int64_t Tn, int64_t C, float* dwpe) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < Tn * C; i += stride) {
    float acc = dwpe[i];
    for (int64_t b = 0; b < B; ++b) acc += to_float(dout[b * Tn * C + i]);
    dwpe[i] = acc;
  }
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor* wpe, int64_t vocab_start,
                       const Tensor& out, Stream s) {
  const int64_t B = ids.size(0), Tn = ids.size(1), C = wte.size(1), V = wte.size(0), tokens = B * Tn;
  if (tokens == 0 || C == 0) return;
  CudaDeviceGuard guard(out.device().index);
  dispatch_float(wte.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pw = static_cast<const T*>(wte.raw());
    const T* pp = wpe ? static_cast<const T*>(wpe->raw()) : nullptr;
    T* po = static_cast<T*>(out.raw());
    const bool vec = C % Pack<T>::N == 0 && aligned16(pw) && aligned16(po) && (!pp || aligned16(pp));
    if (vec)
      embedding_forward_kernel<T, true><<<grid_size(tokens * C / Pack<T>::N, kBlock), kBlock, 0, stream_of(s)>>>(
          ids.data<int32_t>(), pw, V, pp, vocab_start, po, tokens, Tn, C);
    else
      embedding_forward_kernel<T, false><<<grid_size(tokens * C, kBlock), kBlock, 0, stream_of(s)>>>(
          ids.data<int32_t>(), pw, V, pp, vocab_start, po, tokens, Tn, C);
  });
  MT_CUDA_CHECK_LAUNCH();
}

void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, const Tensor& dwte_accum,
                        const Tensor* dwpe_accum, Stream s) {
  const int64_t B = ids.size(0), Tn = ids.size(1), C = dwte_accum.size(1), V = dwte_accum.size(0);
  const int64_t tokens = B * Tn;
  if (tokens == 0 || C == 0) return;
  MT_CHECK(tokens <= INT32_MAX && V < int64_t(UINT32_MAX), "embedding_backward: {} tokens, {} rows", tokens, V);
  CudaDeviceGuard guard(dout.device().index);
  const cudaStream_t st = stream_of(s);

  // Sort (row, token) pairs by row; the sort is stable, so each row's tokens stay in order.
  Tensor pairs = Tensor::empty({4, tokens}, DType::I32, dout.device());
  uint32_t* keys_in = static_cast<uint32_t*>(pairs.raw());
  uint32_t* keys_out = keys_in + tokens;
  int32_t* vals_in = reinterpret_cast<int32_t*>(keys_out + tokens);
  int32_t* vals_out = vals_in + tokens;
  embedding_keys_kernel<<<grid_size(tokens, kBlock), kBlock, 0, st>>>(ids.data<int32_t>(), tokens, vocab_start, V,
                                                                      keys_in, vals_in);
  MT_CUDA_CHECK_LAUNCH();
  int end_bit = 1;
  while (end_bit < 32 && (uint64_t(1) << end_bit) <= uint64_t(V)) ++end_bit;  // keys in [0, V]
  size_t temp_bytes = 0;
  MT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, vals_in, vals_out,
                                                int(tokens), 0, end_bit, st));
  Tensor temp = Tensor::empty({int64_t(temp_bytes / 8 + 1)}, DType::I64, dout.device());
  MT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw(), temp_bytes, keys_in, keys_out, vals_in, vals_out,
                                                int(tokens), 0, end_bit, st));

  dispatch_float(dout.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = static_cast<const T*>(dout.raw());
    const bool vec = C % Pack<T>::N == 0 && aligned16(g);
    const int64_t packs = vec ? C / Pack<T>::N : C;
    const int threads = packs >= 256 ? 256 : int(ceil_div(packs, 32) * 32);
    auto kernel = vec ? embedding_dwte_kernel<T, true> : embedding_dwte_kernel<T, false>;
    kernel<<<unsigned(tokens), threads, 0, st>>>(g, keys_out, vals_out, tokens, V, C, dwte_accum.data<float>());
    MT_CUDA_CHECK_LAUNCH();
    if (dwpe_accum) {
      embedding_dwpe_kernel<T><<<grid_size(Tn * C, kBlock), kBlock, 0, st>>>(g, B, Tn, C, dwpe_accum->data<float>());
      MT_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace mt::cuda
