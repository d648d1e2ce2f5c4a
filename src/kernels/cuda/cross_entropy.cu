// Fused softmax + cross-entropy, one block per row of logits [N, Vp] (columns < vocab count).
// In base 2 with L = log2(e) and M = fl(max_v x_v * L), every path computes
//   s = sum_{v < vocab} 2^(x_v L - M)                     (one ex2.approx per element)
//   loss = ln s + ln2 * (M - x_target L)                  (= logsumexp - x_target, exact in M)
//   dlogits[v] = 2^(x_v L - M) * (dloss / s) - [v == target] * dloss,  v < vocab;
//   0 for the padding columns v >= vocab.
// Two paths:
//  - row in shared memory (the row's first ceil(vocab/P) 16-byte packs fit in the opt-in
//    shared memory, ~227 KB on H100/H200: bf16/fp16 rows up to ~116K columns, fp32 up to
//    ~58K; Vp a multiple of P = 16 / sizeof(T) and 16-byte aligned pointers): the row is read
//    from DRAM once with cp.async into shared memory, then three passes over shared memory
//    (max, sum of exponentials, gradient written with 16-byte stores). Bytes per row:
//    ceil(vocab/P)*16 read + Vp*sizeof(T) written (bf16, Vp 50304: 100.6 KB + 100.6 KB, i.e.
//    3.3 GB for 16384 rows, ~0.69 ms at 4.8 TB/s); forward only, the read alone.
//  - otherwise (fp32 or bf16 rows of 128K columns, odd Vp, unaligned pointers) two passes over
//    global memory: pass 1 keeps an online (max, sum) per thread, rescaled once per group of P
//    columns; pass 2 re-reads the row (from L2 when it is still there, else DRAM) and writes
//    the gradient. Bytes per row: 2 * Vp*sizeof(T) read + Vp*sizeof(T) written.
// Both reduce in a fixed order (per thread in column order, butterfly within warps, warps in
// order), so results are bit-reproducible run to run; the path, and so the bits, depend only on
// dtype, Vp, vocab and pointer alignment. Every thread rewrites only the elements it read and
// x[target] is read before any gradient is written, so dlogits may alias logits. A target
// outside [0, vocab) gives a NaN loss (the CPU backend aborts; a kernel cannot report it
// cheaply). A row whose logits are all -inf has no softmax: NaN loss and gradient.
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/per_device.h"

namespace mt::cuda {
namespace {

// 512 threads: a bf16 row of 50304 columns is 6288 packs of 16 bytes, 12-13 per thread, all of
// them in flight at once (100.6 KB per block against a per-SM bandwidth-delay product of
// ~4.8 TB/s * 1 us / 132 SMs = 36 KB). Two such blocks fit an SM's 228 KB (32 warps, up to 64
// registers a thread), so one block's shared-memory passes overlap the other's loads: per row
// an SM's fair share of DRAM bandwidth (~18 B/clk) moves the 201 KB in ~11K clocks while the
// 2 * 50304 ex2 take ~6.3K clocks of the SFUs (16/clk/SM). 1024 threads would cap registers at
// 32 for two blocks per SM and idle half the threads of small rows.
constexpr int kBlock = 512;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Where a running max starts, not -inf: a -inf logit then gives 2^(-inf - M) = 0, never
// -inf + inf, and M = max * L stays finite.
constexpr float kMaxFloor = -0.5f * FLT_MAX;

// 2^x on the SFU, one MUFU.EX2 (max. relative error ~2 ulp; results below 2^-126 flush to 0).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 16-byte global -> shared copy that bypasses registers (and L1) on sm_80+.
__device__ __forceinline__ void copy16_async(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
#else
  *static_cast<uint4*>(smem) = *static_cast<const uint4*>(gmem);
#endif
}
// Waits for this thread's copies; other threads see them after a following __syncthreads.
__device__ __forceinline__ void copy_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

template <class T> constexpr int kPack = Pack<T>::N;

// One 16-byte shared-memory load (LDS.128; reading the elements of a Pack<T>& one by one would
// issue P narrow loads).
template <class T>
__device__ __forceinline__ Pack<T> load_shared(const Pack<T>* p) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  Pack<T> v;
  static_assert(sizeof(v) == sizeof(u));
  __builtin_memcpy(&v, &u, sizeof(v));
  return v;
}

template <class T>
__device__ __forceinline__ void unpack(const Pack<T>& p, float (&f)[kPack<T>]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // a bf16 is the high half of its float
    uint32_t w[kPack<T> / 2];
    __builtin_memcpy(w, p.v, sizeof(w));
#pragma unroll
    for (int k = 0; k < kPack<T> / 2; ++k) {
      f[2 * k] = __uint_as_float(w[k] << 16);
      f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kPack<T>; ++k) f[k] = to_float(p.v[k]);
  }
}
template <class T>
__device__ __forceinline__ Pack<T> pack_of(const float (&f)[kPack<T>]) {
  Pack<T> p;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {  // one cvt.rn.bf16x2.f32 per pair
    auto* h = reinterpret_cast<__nv_bfloat162*>(p.v);
#pragma unroll
    for (int k = 0; k < kPack<T> / 2; ++k) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
  } else if constexpr (std::is_same_v<T, __half>) {
    auto* h = reinterpret_cast<__half2*>(p.v);
#pragma unroll
    for (int k = 0; k < kPack<T> / 2; ++k) h[k] = __floats2half2_rn(f[2 * k], f[2 * k + 1]);
  } else {
#pragma unroll
    for (int k = 0; k < kPack<T>; ++k) p.v[k] = f[k];
  }
  return p;
}

// Max of a pack (NaN elements are skipped, as by fmaxf); 16-bit types compare in pairs.
template <class T>
__device__ __forceinline__ float pack_max(const Pack<T>& p) {
  if constexpr (std::is_same_v<T, float>) {
    return fmaxf(fmaxf(p.v[0], p.v[1]), fmaxf(p.v[2], p.v[3]));
  } else {
    using T2 = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, __nv_bfloat162, __half2>;
    const auto* h = reinterpret_cast<const T2*>(p.v);
    T2 a = h[0];
#pragma unroll
    for (int k = 1; k < kPack<T> / 2; ++k) a = __hmax2(a, h[k]);
    return fmaxf(to_float(a.x), to_float(a.y));
  }
}

// 2^(f_k L - M) in place and their sum, added pairwise in a fixed order.
template <int P>
__device__ __forceinline__ float exp2_shifted(float (&f)[P], float M) {
#pragma unroll
  for (int k = 0; k < P; ++k) f[k] = ex2(fmaf(f[k], kLog2e, -M));
  float e[P];
#pragma unroll
  for (int k = 0; k < P; ++k) e[k] = f[k];
#pragma unroll
  for (int w = 1; w < P; w *= 2)
#pragma unroll
    for (int k = 0; k + w < P; k += 2 * w) e[k] += e[k + w];
  return e[0];
}

// loss = logsumexp - x_target = ln s + ln2 (M - x_target L): exact however close x_target is to
// the max (no cancellation of two large terms), and consistent with the sum's rounded M.
__device__ __forceinline__ float loss_of(float s, float M, float x_target) {
  return logf(s) + kLn2 * fmaf(-x_target, kLog2e, M);
}

// ---- Row in shared memory: one DRAM read of the row. ------------------------------------------
// Until the block reductions every thread touches only its own packs i = tid + k * blockDim
// (its own cp.async writes, visible to it after the wait), so the first pass needs no barrier.
template <class T>
__global__ void __launch_bounds__(kBlock, 2)
    cross_entropy_smem_kernel(const T* logits, const int32_t* targets, int Vp, int vocab, float* losses,
                              const float* dloss, T* dlogits) {
  constexpr int P = kPack<T>;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  __shared__ float red[32];
  Pack<T>* row = reinterpret_cast<Pack<T>*>(smem_bytes);
  const int64_t r = blockIdx.x;
  const int tid = threadIdx.x, B = blockDim.x;
  const int n_load = (vocab + P - 1) / P, n_all = Vp / P;

  const auto* src = reinterpret_cast<const Pack<T>*>(logits + r * Vp);
  for (int i = tid; i < n_load; i += B) copy16_async(row + i, src + i);
  const int target = targets[r];  // overlaps the copies
  const bool target_ok = target >= 0 && target < vocab;
  copy_async_wait_all();

  float m = kMaxFloor;
  for (int i = tid; i < n_load; i += B) {
    if ((i + 1) * P > vocab) {  // the pack holding column vocab - 1: padding reads as -inf
#pragma unroll
      for (int k = 0; k < P; ++k)
        if (i * P + k >= vocab) row[i].v[k] = from_float<T>(-INFINITY);
    }
    m = fmaxf(m, pack_max(load_shared(row + i)));
  }
  m = block_max(m, red);  // its barriers also publish every thread's copies
  const float M = m * kLog2e;

  float s = 0.0f;
  for (int i = tid; i < n_load; i += B) {
    float f[P];
    unpack(load_shared(row + i), f);
    s += exp2_shifted(f, M);
  }
  s = block_sum(s, red);
  if (tid == 0)
    losses[r] = loss_of(s, M, target_ok ? to_float(reinterpret_cast<const T*>(smem_bytes)[target]) : NAN);
  if (!dlogits) return;

  const float wgt = dloss[r], scale = wgt / s;
  const int target_pack = target_ok ? target / P : -1;
  auto* dst = reinterpret_cast<Pack<T>*>(dlogits + r * Vp);
  for (int i = tid; i < n_all; i += B) {
    float f[P];
    if ((i + 1) * P <= vocab && i != target_pack) {  // every pack but the target's and the last ones
      unpack(load_shared(row + i), f);
      exp2_shifted(f, M);
#pragma unroll
      for (int k = 0; k < P; ++k) f[k] *= scale;
    } else {  // the target's pack, the last pack with columns < vocab, the padding packs
      if (i < n_load) {
        unpack(load_shared(row + i), f);
        exp2_shifted(f, M);
      }
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const int col = i * P + k;
        f[k] = col >= vocab ? 0.0f : col == target ? fmaf(f[k], scale, -wgt) : f[k] * scale;
      }
    }
    dst[i] = pack_of<T>(f);
  }
}

// ---- Fallback: two passes over global memory. -------------------------------------------------
// Columns [v, v + P) of x as floats; columns >= n read as -inf (without touching memory).
template <class T, bool VEC>
__device__ __forceinline__ void load_group(const T* x, int64_t v, int64_t n, float (&f)[kPack<T>]) {
  constexpr int P = kPack<T>;
  if constexpr (VEC) {
    if (v >= n) {
#pragma unroll
      for (int k = 0; k < P; ++k) f[k] = -INFINITY;
      return;
    }
    unpack(load_pack(x + v), f);
    if (v + P > n) {
#pragma unroll
      for (int k = 0; k < P; ++k)
        if (v + k >= n) f[k] = -INFINITY;
    }
  } else {
#pragma unroll
    for (int k = 0; k < P; ++k) f[k] = v + k < n ? to_float(x[v + k]) : -INFINITY;
  }
}

// Online (M, s): M the running max in base-2 units, s = sum 2^(x L - M).
struct MaxSum {
  float M, s;
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float M = fmaxf(a.M, b.M);
  return {M, a.s * ex2(a.M - M) + b.s * ex2(b.M - M)};
}

// Each thread owns groups of P columns v = (tid + k * blockDim) * P, in both passes; VEC loads a
// group with one 16-byte load (Vp % P == 0, aligned pointers), otherwise P scalar loads.
template <class T, bool VEC>
__global__ void __launch_bounds__(kBlock)
    cross_entropy_kernel(const T* logits, const int32_t* targets, int64_t Vp, int64_t vocab, float* losses,
                         const float* dloss, T* dlogits) {
  constexpr int P = kPack<T>;
  __shared__ MaxSum shared[32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const T* x = logits + row * Vp;
  const int target = targets[row];
  const bool target_ok = target >= 0 && target < vocab;
  if (threadIdx.x == 0) target_logit = target_ok ? to_float(x[target]) : NAN;

  const int64_t stride = int64_t(blockDim.x) * P;
  MaxSum acc{kMaxFloor * kLog2e, 0.0f};
  for (int64_t v = int64_t(threadIdx.x) * P; v < vocab; v += stride) {
    float f[P];
    load_group<T, VEC>(x, v, vocab, f);
    float gm = f[0];
#pragma unroll
    for (int k = 1; k < P; ++k) gm = fmaxf(gm, f[k]);
    const float M = fmaxf(acc.M, gm * kLog2e);  // one rescale per group, not per element
    const float sum = exp2_shifted(f, M);
    acc = {M, acc.s * ex2(acc.M - M) + sum};
  }
  // Fixed-order combine: butterfly within warps, then warp results in order.
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, acc.M, o), __shfl_xor_sync(0xffffffffu, acc.s, o)};
    acc = combine(acc, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) shared[warp] = acc;
  __syncthreads();  // also publishes target_logit; all pass-1 reads are done after this
  MaxSum total = shared[0];
  for (int w = 1; w < nwarps; ++w) total = combine(total, shared[w]);
  if (threadIdx.x == 0) losses[row] = loss_of(total.s, total.M, target_logit);
  if (!dlogits) return;

  const float wgt = dloss[row], scale = wgt / total.s;
  T* g = dlogits + row * Vp;
  for (int64_t v = int64_t(threadIdx.x) * P; v < Vp; v += stride) {
    float f[P];
    load_group<T, VEC>(x, v, vocab, f);
    exp2_shifted(f, total.M);
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int64_t col = v + k;
      f[k] = col >= vocab ? 0.0f : col == target ? fmaf(f[k], scale, -wgt) : f[k] * scale;
    }
    if constexpr (VEC) {
      store_pack(g + v, pack_of<T>(f));
    } else {
#pragma unroll
      for (int k = 0; k < P; ++k)
        if (v + k < Vp) g[v + k] = from_float<T>(f[k]);
    }
  }
}

// Dynamic shared memory the smem kernel may use on `device` (the opt-in maximum less its static
// shared memory); raises the kernel's limit to it on the first call per device.
template <class T>
int64_t smem_row_limit(int device) {
  struct Limit {
    int64_t bytes;
  };
  return per_device<Limit>(device, [device] {
    int optin = 0;
    MT_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    cudaFuncAttributes attr{};
    MT_CUDA_CHECK(cudaFuncGetAttributes(&attr, cross_entropy_smem_kernel<T>));
    const int bytes = optin - int(attr.sharedSizeBytes);
    MT_CUDA_CHECK(
        cudaFuncSetAttribute(cross_entropy_smem_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return new Limit{bytes};
  }).bytes;
}

}  // namespace

void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab, const Tensor& losses,
                                    const Tensor* dloss, const Tensor* dlogits, Stream s) {
  const int64_t N = logits.size(0), Vp = logits.size(1);
  if (N == 0) return;
  MT_CHECK(N <= INT32_MAX, "cross_entropy: {} rows", N);
  const int device = logits.device().index;
  CudaDeviceGuard guard(device);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int P = kPack<T>;
    const T* x = static_cast<const T*>(logits.raw());
    T* g = dlogits ? static_cast<T*>(dlogits->raw()) : nullptr;
    const float* dl = dloss ? dloss->data<float>() : nullptr;
    const int32_t* t = targets.data<int32_t>();
    float* out = losses.data<float>();
    const bool vec = Vp % P == 0 && aligned16(x) && (!g || aligned16(g));
    const int64_t row_bytes = ceil_div(vocab, P) * 16;
    if (vec && Vp + P <= INT32_MAX && row_bytes <= smem_row_limit<T>(device))
      cross_entropy_smem_kernel<T>
          <<<unsigned(N), kBlock, size_t(row_bytes), stream_of(s)>>>(x, t, int(Vp), int(vocab), out, dl, g);
    else if (vec)
      cross_entropy_kernel<T, true><<<unsigned(N), kBlock, 0, stream_of(s)>>>(x, t, Vp, vocab, out, dl, g);
    else
      cross_entropy_kernel<T, false><<<unsigned(N), kBlock, 0, stream_of(s)>>>(x, t, Vp, vocab, out, dl, g);
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
