// RMSNorm over the last dimension C of x [N, C], fp32 statistics:
//   forward:  rstd = 1/sqrt(sum x^2 / C + eps), y = x rstd w
//   backward: xhat = x rstd, g = dy w, dx = rstd (g - xhat mean(g xhat)),  dw += sum_rows dy xhat
// w is fp32 or x's dtype, read through a flag (one instantiation for both).
//
// Forward: a warp per row. With 16-byte packs (C a multiple of the pack, aligned tensors) and
// C <= 32 lanes * kMaxPacks packs (4096 columns at 16 bits, 2048 at fp32) a lane loads its packs
// of the row into registers at once and the sum of squares and y come from there; otherwise two
// passes over the row, 16-byte or scalar, the second hitting L1/L2. DRAM: reads x, writes y.
// add_rmsnorm_forward: x + r is rounded to T and written to sum, and that stored value is what is
// normalised (as in the unfused add + rmsnorm); DRAM: reads x, r, writes sum, y.
//
// Backward, fused path (16-byte packs fit: C a multiple of the pack, dy, x, dx, dres aligned, and
// C <= 32 * kFusedMaxPacks packs: 2048 at 16 bits, 1024 at fp32): one kernel, a warp per row, each
// warp walking rows warp, warp + total warps, ... over a grid that depends on N only. A lane
// holds its packs of dy and x in registers, reduces mean(g xhat) across the warp, writes dx from
// the registers (so dx may alias dy) and adds dy xhat into dw sums it keeps for the columns it
// owns (the same columns on every row). The block adds its warps' sums in warp order into one
// partial row [blocks, C] of fp32; column_finish adds the blocks in order into dw_accum. DRAM:
// per row, reads dy, x, (dres), rstd once and writes dx; per call blocks * C partial floats
// (blocks = N / 64 up to 1024) are written and read back.
// Backward, two-pass path (everything else): dw first as a deterministic column reduction
// (column_reduce.cuh; reads dy and x once), then dx with a warp per row (reads dy and x again,
// writes dx). dw before dx lets dx alias dy.
// Both paths are bit-reproducible run to run (fixed row-to-thread assignment and summation
// order, no atomics) but add dw in different orders, so they differ from each other (and from
// the CPU) in the last bits. rmsnorm_backward_add: dx is rounded to T, then dres is added and the
// sum rounded again, the rounding of the unfused [rmsnorm_backward; add]; dres must not alias dx.
//
// qk_rmsnorm on qkv [B, T, G, Q/G + 2, D]: every head (D values) is a row. Forward: a warp per
// head through the forward's row code, with q_w for the query heads, k_w for the key head and a
// copy for the value head. Backward: dq_w, dk_w by the column reduction over the q heads (resp.
// k heads) in memory order, then dqkv_in with a warp per head (value heads copied). Both
// reductions finish before dqkv_in is written, so dqkv_in may alias dqkv_out.
#include <type_traits>

#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kWarps = 8;             // rows (heads) per block of the warp-per-row kernels
constexpr int kMaxPacks = 16;         // most 16-byte packs a lane holds in the forward
constexpr int kFusedWarps = 8;        // rows in flight per block of the fused backward
constexpr int kFusedRowsPerWarp = 8;  // rows a warp walks (fewer blocks: fewer partial rows)
constexpr int kFusedMaxBlocks = 1024; // past N = 64K rows, warps walk more rows instead
constexpr int kFusedMaxPacks = 8;     // the dw sums (8 P floats) and the row's dy, x packs in registers

// w[c] as fp32, w being fp32 (w_f32) or T.
template <class T>
__device__ __forceinline__ float load_w(const void* w, bool w_f32, int c) {
  return w_f32 ? static_cast<const float*>(w)[c] : to_float(static_cast<const T*>(w)[c]);
}

// Which rows a reduction covers: row i of `n` per group (of `per` rows, `per_rstd` of them with
// a statistic) sits at row (i / n) per + first + i % n and has statistic (i / n) per_rstd +
// first + i % n. Plain RMSNorm: every row (n = per = per_rstd = 1, first = 0).
struct Rows {
  int64_t n = 1, first = 0, per = 1, per_rstd = 1;
  __device__ int64_t row(int64_t i) const { return n == 1 ? i * per + first : (i / n) * per + first + i % n; }
  __device__ int64_t stat(int64_t i) const {
    return n == 1 ? i * per_rstd + first : (i / n) * per_rstd + first + i % n;
  }
};

// One row of the forward by one warp (all 32 lanes call it, `lane` = threadIdx.x % 32): y =
// RMSNorm(x), lane 0 writes *rstd. ADD: the row normalised is x + r rounded to T, written to sum
// first (sum may alias x or r: every element is read before it is written, by the lane that
// writes it). PACKS > 0 (needs VEC, C <= 32 PACKS P): lane owns packs lane + 32 j, j < PACKS,
// held in registers. PACKS == 0: two passes over the row, visiting the columns in the same order.
template <class T, bool ADD, bool VEC, int PACKS>
__device__ __forceinline__ void forward_row(const T* x, const T* r, T* sum, const void* w, bool w_f32, float eps,
                                            T* y, float* rstd, int C, int lane) {
  constexpr int P = VEC ? Pack<T>::N : 1;
  static_assert(PACKS == 0 || VEC, "the register path needs 16-byte packs");
  float ss = 0.0f;
  if constexpr (PACKS > 0) {
    Pack<T> v[PACKS];
    // All loads first, then the stores of sum: a store to sum (which may alias x) between the
    // loads would make each load wait for the one before.
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = (j * 32 + lane) * P;
      if (c < C) {
        v[j] = load_pack(x + c);
        if constexpr (ADD) {
          const Pack<T> vr = load_pack(r + c);
#pragma unroll
          for (int k = 0; k < P; ++k) v[j].v[k] = from_float<T>(to_float(v[j].v[k]) + to_float(vr.v[k]));
        }
      }
    }
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = (j * 32 + lane) * P;
      if (c < C) {
        if constexpr (ADD) store_pack(sum + c, v[j]);
#pragma unroll
        for (int k = 0; k < P; ++k) {
          const float f = to_float(v[j].v[k]);
          ss += f * f;
        }
      }
    }
    const float rs = 1.0f / sqrtf(warp_sum(ss) / float(C) + eps);
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = (j * 32 + lane) * P;
      if (c < C) {
        Pack<T> o;
#pragma unroll
        for (int k = 0; k < P; ++k) o.v[k] = from_float<T>(to_float(v[j].v[k]) * rs * load_w<T>(w, w_f32, c + k));
        store_pack(y + c, o);
      }
    }
    if (lane == 0) *rstd = rs;
  } else {
    for (int c = lane * P; c < C; c += 32 * P) {
      if constexpr (VEC) {
        Pack<T> v = load_pack(x + c);
        if constexpr (ADD) {
          const Pack<T> vr = load_pack(r + c);
#pragma unroll
          for (int k = 0; k < P; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) + to_float(vr.v[k]));
          store_pack(sum + c, v);
        }
#pragma unroll
        for (int k = 0; k < P; ++k) {
          const float f = to_float(v.v[k]);
          ss += f * f;
        }
      } else {
        T v = x[c];
        if constexpr (ADD) {
          v = from_float<T>(to_float(v) + to_float(r[c]));
          sum[c] = v;
        }
        const float f = to_float(v);
        ss += f * f;
      }
    }
    const float rs = 1.0f / sqrtf(warp_sum(ss) / float(C) + eps);
    const T* xr = ADD ? sum : x;  // the stored sums, written by this lane in the pass above
    for (int c = lane * P; c < C; c += 32 * P) {
      if constexpr (VEC) {
        Pack<T> v = load_pack(xr + c);
#pragma unroll
        for (int k = 0; k < P; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) * rs * load_w<T>(w, w_f32, c + k));
        store_pack(y + c, v);
      } else {
        y[c] = from_float<T>(to_float(xr[c]) * rs * load_w<T>(w, w_f32, c));
      }
    }
    if (lane == 0) *rstd = rs;
  }
}

// A warp per row; r and sum are used only with ADD.
template <class T, bool ADD, bool VEC, int PACKS>
__global__ void __launch_bounds__(32 * kWarps) rmsnorm_forward_kernel(const T* x, const T* r, T* sum, const void* w,
                                                                      bool w_f32, float eps, T* y, float* rstd,
                                                                      int64_t N, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= N) return;  // the whole warp
  const int64_t off = row * C;
  forward_row<T, ADD, VEC, PACKS>(x + off, ADD ? r + off : nullptr, ADD ? sum + off : nullptr, w, w_f32, eps, y + off,
                                  rstd + row, C, lane);
}

// A warp per head of qkv [.., per, D] (per = Q/G + 2 heads a group; the last is the value head).
template <class T, bool VEC, int PACKS>
__global__ void __launch_bounds__(32 * kWarps) qk_rmsnorm_forward_kernel(const T* in, const void* q_w,
                                                                         const void* k_w, bool w_f32, float eps,
                                                                         T* out, float* rstd, int64_t heads, int per,
                                                                         int D) {
  constexpr int P = VEC ? Pack<T>::N : 1;
  const int lane = threadIdx.x & 31;
  const int64_t head = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (head >= heads) return;  // the whole warp
  const int64_t group = head / per, off = head * D;
  const int h = int(head - group * per);
  if (h == per - 1) {
    for (int c = lane * P; c < D; c += 32 * P) {
      if constexpr (VEC) store_pack(out + off + c, load_pack(in + off + c));
      else out[off + c] = in[off + c];
    }
    return;
  }
  forward_row<T, false, VEC, PACKS>(in + off, nullptr, nullptr, h < per - 2 ? q_w : k_w, w_f32, eps, out + off,
                                    rstd + group * (per - 1) + h, D, lane);
}

// dw partials over one chunk of rows for kColTile columns: partial[blockIdx.y, c] = sum over
// rows i of the chunk of dy xhat (threads stride the chunk, then combine in a fixed order).
template <class T>
__global__ void rmsnorm_dw_partial_kernel(const T* dy, const T* x, const float* rstd, Rows rows, int64_t count,
                                          int64_t C, int64_t chunk_rows, float* partial) {
  __shared__ float shared[kRowThreads][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t i0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t i1 = i0 + chunk_rows < count ? i0 + chunk_rows : count;
  float acc = 0.0f;
  if (c < C) {
    for (int64_t i = i0 + threadIdx.y; i < i1; i += kRowThreads) {
      const int64_t off = rows.row(i) * C + c;
      acc += to_float(dy[off]) * (to_float(x[off]) * rstd[rows.stat(i)]);
    }
  }
  const float total = column_block_total(acc, shared);  // every thread of the block takes part
  if (threadIdx.y == 0 && c < C) partial[int64_t(blockIdx.y) * C + c] = total;
}

// dx of one row by one warp, from mean(g xhat) reduced in a first pass; ADD: then + dres (each
// rounded to T, as the unfused backward + add). Each lane reads and writes only its own columns,
// so dx may alias dy.
template <class T, bool ADD, bool VEC>
__device__ __forceinline__ void dx_row(const T* dy, const T* x, const void* w, bool w_f32, float rs, const T* dres,
                                       T* dx, int C, int lane) {
  constexpr int P = VEC ? Pack<T>::N : 1;
  float s = 0.0f;
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      const Pack<T> vg = load_pack(dy + c), vx = load_pack(x + c);
#pragma unroll
      for (int k = 0; k < P; ++k) s += to_float(vg.v[k]) * load_w<T>(w, w_f32, c + k) * (to_float(vx.v[k]) * rs);
    } else {
      s += to_float(dy[c]) * load_w<T>(w, w_f32, c) * (to_float(x[c]) * rs);
    }
  }
  const float m = warp_sum(s) / float(C);
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      Pack<T> vg = load_pack(dy + c);
      const Pack<T> vx = load_pack(x + c);
      Pack<T> vr;
      if constexpr (ADD) vr = load_pack(dres + c);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const float g = to_float(vg.v[k]) * load_w<T>(w, w_f32, c + k), xhat = to_float(vx.v[k]) * rs;
        const T d = from_float<T>(rs * (g - xhat * m));
        vg.v[k] = ADD ? from_float<T>(to_float(d) + to_float(vr.v[k])) : d;
      }
      store_pack(dx + c, vg);
    } else {
      const float g = to_float(dy[c]) * load_w<T>(w, w_f32, c), xhat = to_float(x[c]) * rs;
      const T d = from_float<T>(rs * (g - xhat * m));
      dx[c] = ADD ? from_float<T>(to_float(d) + to_float(dres[c])) : d;
    }
  }
}

template <class T, bool ADD, bool VEC>
__global__ void __launch_bounds__(32 * kWarps) rmsnorm_dx_kernel(const T* dy, const T* x, const void* w, bool w_f32,
                                                                 const float* rstd, const T* dres, T* dx, int64_t N,
                                                                 int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= N) return;  // the whole warp
  const int64_t off = row * C;
  dx_row<T, ADD, VEC>(dy + off, x + off, w, w_f32, rstd[row], ADD ? dres + off : nullptr, dx + off, C, lane);
}

// A warp per head: dqkv_in of the q and k heads, the value heads' gradient copied.
template <class T, bool VEC>
__global__ void __launch_bounds__(32 * kWarps) qk_rmsnorm_dx_kernel(const T* dy, const T* x, const void* q_w,
                                                                    const void* k_w, bool w_f32, const float* rstd,
                                                                    T* dx, int64_t heads, int per, int D) {
  constexpr int P = VEC ? Pack<T>::N : 1;
  const int lane = threadIdx.x & 31;
  const int64_t head = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (head >= heads) return;  // the whole warp
  const int64_t group = head / per, off = head * D;
  const int h = int(head - group * per);
  if (h == per - 1) {
    for (int c = lane * P; c < D; c += 32 * P) {
      if constexpr (VEC) store_pack(dx + off + c, load_pack(dy + off + c));
      else dx[off + c] = dy[off + c];
    }
    return;
  }
  dx_row<T, false, VEC>(dy + off, x + off, h < per - 2 ? q_w : k_w, w_f32, rstd[group * (per - 1) + h], nullptr,
                        dx + off, D, lane);
}

// The fused backward's grid: a function of N only, so the summation order (and the bits of dw)
// do not depend on the device.
inline int fused_blocks(int64_t N) {
  const int64_t want = ceil_div(N, int64_t(kFusedWarps) * kFusedRowsPerWarp);
  return int(want < kFusedMaxBlocks ? want : kFusedMaxBlocks);
}

// Fused backward (see the top of the file). Lane `lane` owns packs lane + 32 j, j < PACKS, of
// every row; packs at or past C are skipped. partial is [gridDim.x, C]. w is staged in shared
// memory as fp32 once per block. No warp returns early: all take part in the block reduction.
template <class T, bool ADD, int PACKS>
__global__ void __launch_bounds__(32 * kFusedWarps)
    rmsnorm_backward_fused_kernel(const T* dy, const T* x, const void* w, bool w_f32, const float* rstd,
                                  const T* dres, T* dx, int64_t N, int C, float* partial) {
  constexpr int P = Pack<T>::N;
  constexpr int kSpan = 32 * P;  // columns of one pack index j across the warp
  __shared__ alignas(16) float w_s[PACKS * kSpan];
  __shared__ alignas(16) float red[kFusedWarps][kSpan];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int c = threadIdx.x; c < C; c += blockDim.x) w_s[c] = load_w<T>(w, w_f32, c);
  __syncthreads();

  float dw[PACKS][P];
#pragma unroll
  for (int j = 0; j < PACKS; ++j)
#pragma unroll
    for (int k = 0; k < P; ++k) dw[j][k] = 0.0f;

  const int64_t stride = int64_t(gridDim.x) * kFusedWarps;
  for (int64_t row = int64_t(blockIdx.x) * kFusedWarps + warp; row < N; row += stride) {
    const int64_t off = row * C;
    const float rs = rstd[row];
    Pack<T> vg[PACKS], vx[PACKS];
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = (j * 32 + lane) * P;
      if (c < C) {
        vg[j] = load_pack(dy + off + c);
        vx[j] = load_pack(x + off + c);
      }
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = (j * 32 + lane) * P;
      if (c < C) {
#pragma unroll
        for (int k = 0; k < P; ++k) {
          const float d = to_float(vg[j].v[k]), xhat = to_float(vx[j].v[k]) * rs;
          s += d * w_s[c + k] * xhat;
          dw[j][k] += d * xhat;
        }
      }
    }
    const float m = warp_sum(s) / float(C);
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = (j * 32 + lane) * P;
      if (c < C) {
        Pack<T> vr;
        if constexpr (ADD) vr = load_pack(dres + off + c);
        Pack<T> o;
#pragma unroll
        for (int k = 0; k < P; ++k) {
          const float g = to_float(vg[j].v[k]) * w_s[c + k], xhat = to_float(vx[j].v[k]) * rs;
          const T d = from_float<T>(rs * (g - xhat * m));
          o.v[k] = ADD ? from_float<T>(to_float(d) + to_float(vr.v[k])) : d;
        }
        store_pack(dx + off + c, o);
      }
    }
  }

  // Block sums, a pack index at a time: every warp parks its kSpan dw values, then each thread
  // adds one column's kFusedWarps values in warp order and writes the block's partial.
#pragma unroll
  for (int j = 0; j < PACKS; ++j) {
    if (j * kSpan >= C) break;  // the same for the whole block
#pragma unroll
    for (int k = 0; k < P; k += 4)  // P is 4 or 8: 16-byte stores
      *reinterpret_cast<float4*>(&red[warp][lane * P + k]) =
          make_float4(dw[j][k], dw[j][k + 1], dw[j][k + 2], dw[j][k + 3]);
    __syncthreads();
    for (int t = threadIdx.x; t < kSpan; t += blockDim.x) {
      const int c = j * kSpan + t;
      float total = red[0][t];
#pragma unroll
      for (int k = 1; k < kFusedWarps; ++k) total += red[k][t];
      if (c < C) partial[int64_t(blockIdx.x) * C + c] = total;
    }
    __syncthreads();
  }
}

// Calls fn(std::integral_constant<int, K>{}) with K the smallest power of two >= packs, for
// 1 <= packs <= MAX (MAX a power of two).
template <int MAX, class Fn>
void with_packs(int64_t packs, Fn&& fn) {
  if constexpr (MAX > 1) {
    if (packs <= MAX / 2) return with_packs<MAX / 2>(packs, fn);
  }
  fn(std::integral_constant<int, MAX>{});
}

// dw[c] += sum over the `count` rows of `rows` of dy xhat, by the two-pass column reduction.
template <class T>
void dw_column_reduce(const T* dy, const T* x, const float* rstd, Rows rows, int64_t count, int64_t C, float* dw,
                      Device dev, cudaStream_t st) {
  if (count == 0) return;
  const int64_t chunk_rows = column_chunk_rows(count), chunks = ceil_div(count, chunk_rows);
  Tensor partial = Tensor::empty({chunks, C}, DType::F32, dev);
  const dim3 grid(unsigned(ceil_div(C, kColTile)), unsigned(chunks)), block(kColTile, kRowThreads);
  rmsnorm_dw_partial_kernel<T><<<grid, block, 0, st>>>(dy, x, rstd, rows, count, C, chunk_rows, partial.data<float>());
  MT_CUDA_CHECK_LAUNCH();
  column_finish(partial.data<float>(), chunks, C, dw, st);
}

// r/sum null: plain RMSNorm.
void forward(const Tensor& x, const Tensor* r, const Tensor* sum, const Tensor& w, float eps, const Tensor& y,
             const Tensor& rstd, Stream s) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (N == 0) return;
  MT_CHECK(C < (int64_t(1) << 31), "rmsnorm: C = {} too large", C);
  CudaDeviceGuard guard(x.device().index);
  const cudaStream_t st = stream_of(s);
  const int grid = int(ceil_div(N, kWarps));
  const bool w_f32 = w.dtype() == DType::F32;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = static_cast<const T*>(x.raw());
    const T* pr = r ? static_cast<const T*>(r->raw()) : nullptr;
    T* psum = sum ? static_cast<T*>(sum->raw()) : nullptr;
    T* py = static_cast<T*>(y.raw());
    float* prstd = rstd.data<float>();
    const bool vec =
        C % Pack<T>::N == 0 && aligned16(px) && aligned16(py) && (!r || (aligned16(pr) && aligned16(psum)));
    const int64_t packs = ceil_div(C / Pack<T>::N, 32);  // per lane
    auto launch = [&](auto vec_tag, auto packs_tag) {
      constexpr bool V = decltype(vec_tag)::value;
      constexpr int K = decltype(packs_tag)::value;
      auto kernel = r ? rmsnorm_forward_kernel<T, true, V, K> : rmsnorm_forward_kernel<T, false, V, K>;
      kernel<<<grid, 32 * kWarps, 0, st>>>(px, pr, psum, w.raw(), w_f32, eps, py, prstd, N, int(C));
    };
    if (vec && packs <= kMaxPacks)
      with_packs<kMaxPacks>(packs, [&](auto k) { launch(std::true_type{}, k); });
    else if (vec)
      launch(std::true_type{}, std::integral_constant<int, 0>{});
    else
      launch(std::false_type{}, std::integral_constant<int, 0>{});
  });
  MT_CUDA_CHECK_LAUNCH();
}

// dres null: plain RMSNorm backward.
void backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor* dres,
              const Tensor& dx, const Tensor& dw_accum, Stream s) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (N == 0) return;
  MT_CHECK(C < (int64_t(1) << 31), "rmsnorm: C = {} too large", C);
  CudaDeviceGuard guard(x.device().index);
  const cudaStream_t st = stream_of(s);
  const bool w_f32 = w.dtype() == DType::F32;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pdy = static_cast<const T*>(dy.raw());
    const T* px = static_cast<const T*>(x.raw());
    const T* pres = dres ? static_cast<const T*>(dres->raw()) : nullptr;
    T* pdx = static_cast<T*>(dx.raw());
    const float* prstd = rstd.data<float>();
    const bool vec =
        C % Pack<T>::N == 0 && aligned16(pdy) && aligned16(px) && aligned16(pdx) && (!dres || aligned16(pres));
    const int64_t packs = ceil_div(C / Pack<T>::N, 32);  // per lane
    if (vec && packs <= kFusedMaxPacks) {
      const int blocks = fused_blocks(N);
      Tensor partial = Tensor::empty({blocks, C}, DType::F32, x.device());
      with_packs<kFusedMaxPacks>(packs, [&](auto k) {
        constexpr int K = decltype(k)::value;
        auto kernel = dres ? rmsnorm_backward_fused_kernel<T, true, K> : rmsnorm_backward_fused_kernel<T, false, K>;
        kernel<<<blocks, 32 * kFusedWarps, 0, st>>>(pdy, px, w.raw(), w_f32, prstd, pres, pdx, N, int(C),
                                                    partial.data<float>());
      });
      MT_CUDA_CHECK_LAUNCH();
      column_finish(partial.data<float>(), blocks, C, dw_accum.data<float>(), st);
      return;
    }
    dw_column_reduce(pdy, px, prstd, Rows{}, N, C, dw_accum.data<float>(), x.device(), st);
    const int grid = int(ceil_div(N, kWarps));
    auto launch = [&](auto kernel) {
      kernel<<<grid, 32 * kWarps, 0, st>>>(pdy, px, w.raw(), w_f32, prstd, pres, pdx, N, int(C));
    };
    if (dres)
      vec ? launch(rmsnorm_dx_kernel<T, true, true>) : launch(rmsnorm_dx_kernel<T, true, false>);
    else
      vec ? launch(rmsnorm_dx_kernel<T, false, true>) : launch(rmsnorm_dx_kernel<T, false, false>);
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd, Stream s) {
  forward(x, nullptr, nullptr, w, eps, y, rstd, s);
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& sum,
                         const Tensor& y, const Tensor& rstd, Stream s) {
  forward(x, &r, &sum, w, eps, y, rstd, s);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                      const Tensor& dw_accum, Stream s) {
  backward(dy, x, w, rstd, nullptr, dx, dw_accum, s);
}

void rmsnorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dres,
                          const Tensor& dx, const Tensor& dw_accum, Stream s) {
  backward(dy, x, w, rstd, &dres, dx, dw_accum, s);
}

void qk_rmsnorm_forward(const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w, int /*n_query_groups*/, float eps,
                        const Tensor& qkv_out, const Tensor& rstd, Stream s) {
  const int64_t D = qkv_in.size(4), per = qkv_in.size(3), heads = qkv_in.numel() / D;
  if (heads == 0) return;
  MT_CHECK(D < (int64_t(1) << 31) && per < (int64_t(1) << 31), "qk_rmsnorm: qkv {} too wide", qkv_in.str());
  CudaDeviceGuard guard(qkv_in.device().index);
  const cudaStream_t st = stream_of(s);
  const int grid = int(ceil_div(heads, kWarps));
  const bool w_f32 = q_w.dtype() == DType::F32;
  dispatch_float(qkv_in.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pin = static_cast<const T*>(qkv_in.raw());
    T* pout = static_cast<T*>(qkv_out.raw());
    const bool vec = D % Pack<T>::N == 0 && aligned16(pin) && aligned16(pout);
    const int64_t packs = ceil_div(D / Pack<T>::N, 32);  // per lane
    auto launch = [&](auto vec_tag, auto packs_tag) {
      constexpr bool V = decltype(vec_tag)::value;
      constexpr int K = decltype(packs_tag)::value;
      qk_rmsnorm_forward_kernel<T, V, K><<<grid, 32 * kWarps, 0, st>>>(
          pin, q_w.raw(), k_w.raw(), w_f32, eps, pout, rstd.data<float>(), heads, int(per), int(D));
    };
    if (vec && packs <= kMaxPacks)
      with_packs<kMaxPacks>(packs, [&](auto k) { launch(std::true_type{}, k); });
    else if (vec)
      launch(std::true_type{}, std::integral_constant<int, 0>{});
    else
      launch(std::false_type{}, std::integral_constant<int, 0>{});
  });
  MT_CUDA_CHECK_LAUNCH();
}

void qk_rmsnorm_backward(const Tensor& dqkv_out, const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w,
                         int /*n_query_groups*/, const Tensor& rstd, const Tensor& dqkv_in, const Tensor& dq_w_accum,
                         const Tensor& dk_w_accum, Stream s) {
  const int64_t D = qkv_in.size(4), per = qkv_in.size(3), heads = qkv_in.numel() / D, groups = heads / per;
  if (heads == 0) return;
  MT_CHECK(D < (int64_t(1) << 31) && per < (int64_t(1) << 31), "qk_rmsnorm: qkv {} too wide", qkv_in.str());
  CudaDeviceGuard guard(qkv_in.device().index);
  const cudaStream_t st = stream_of(s);
  const bool w_f32 = q_w.dtype() == DType::F32;
  dispatch_float(qkv_in.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pdy = static_cast<const T*>(dqkv_out.raw());
    const T* px = static_cast<const T*>(qkv_in.raw());
    T* pdx = static_cast<T*>(dqkv_in.raw());
    const float* prstd = rstd.data<float>();
    // The weight gradients first: dqkv_in may be dqkv_out.
    dw_column_reduce(pdy, px, prstd, Rows{per - 2, 0, per, per - 1}, groups * (per - 2), D,
                     dq_w_accum.data<float>(), qkv_in.device(), st);
    dw_column_reduce(pdy, px, prstd, Rows{1, per - 2, per, per - 1}, groups, D, dk_w_accum.data<float>(),
                     qkv_in.device(), st);
    const bool vec = D % Pack<T>::N == 0 && aligned16(pdy) && aligned16(px) && aligned16(pdx);
    const int grid = int(ceil_div(heads, kWarps));
    auto kernel = vec ? qk_rmsnorm_dx_kernel<T, true> : qk_rmsnorm_dx_kernel<T, false>;
    kernel<<<grid, 32 * kWarps, 0, st>>>(pdy, px, q_w.raw(), k_w.raw(), w_f32, prstd, pdx, heads, int(per), int(D));
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
