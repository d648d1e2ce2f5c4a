// LayerNorm over the last dimension C of x [N, C], fp32 statistics:
//   forward:  mean = sum x / C, rstd = 1/sqrt(sum (x - mean)^2 / C + eps), y = (x - mean) rstd w + b
//   backward: n = (x - mean) rstd, g = dy w,
//             dx = rstd (g - mean(g) - n mean(g n)),  dw += sum_rows dy n,  db += sum_rows dy
// Forward: a warp per row. With 16-byte packs (C a multiple of the pack, aligned tensors) and
// C <= 2048 at 16 bits (1024 at fp32; with the residual add 1024 | 512) the row is loaded into
// registers at once and the sum, centred sum of squares and y come from there; otherwise three
// passes over the row (the second and third hit L1/L2), scalar or 16-byte. DRAM sees one read of
// x and one write of y. add_layernorm_forward: the first pass reads x and r and writes their sum
// (rounded to T, so LN sees exactly the stored residual stream), which the next passes (or the
// registers) normalise; DRAM: reads x, r, writes sum, y.
//
// Backward, fused path (16-byte packs fit: C a multiple of the pack, dy, x, dx, dres 16-byte
// aligned, and C <= 32 lanes * kFusedMaxPacks packs: bf16/fp16 C <= 2048, fp32 C <= 1024): one
// kernel with a warp per row, each warp walking rows warp, warp + total warps, ... over a grid
// that depends on N only. A lane loads its packs of the row's dy and x into registers once
// (and copies dres's into shared memory with cp.async at the same time), reduces mean(g),
// mean(g n) across the warp, writes dx from the registers (so dx may alias dy), and adds dy n, dy into dw, db sums it keeps in registers for the columns it
// owns (the same columns on every row). At the end the block adds its warps' sums in warp
// order and writes one partial row per block to a [2, blocks, C] fp32 workspace;
// column_finish_pair adds the blocks in order into dw_accum, db_accum (one launch for both).
// DRAM: per row, reads dy, x, (dres) and 2 statistics once, writes dx; per call, the
// 2 * blocks * C partial floats are written and read back (blocks = N / 64 up to 1024: 1/8 byte
// per element each way, ~4% of the bf16 traffic).
// Backward, two-pass path (everything else: unaligned, C not a multiple of the pack, wider
// rows): dw, db first, as a deterministic column reduction (column_reduce.cuh; reads dy and x
// once), then dx with a warp per row (reads dy and x again, writes dx). dw/db before dx lets
// dx alias dy.
// Both paths are bit-reproducible run to run (fixed row-to-thread assignment, fixed summation
// order, no atomics) but sum dw, db in different orders, so they differ from each other in the
// last bits. layernorm_backward_add: the dx write adds dres (one more read, no separate add
// pass); dres must not alias dx.
#include <cstring>
#include <type_traits>

#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kWarps = 8;  // rows per block

// ADD: x + r is written to `sum` and normalised (sum may alias x or r: each element is read
// before it is written, by the thread that writes it); otherwise r and sum are unused.
template <class T, class W, bool VEC, bool ADD>
__global__ void layernorm_forward_kernel(const T* x, const T* r, T* sum, const W* w, const W* b, float eps, T* y,
                                         float* mean, float* rstd, int64_t N, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= N) return;
  const T* xin = x + row * C;
  const T* xr = (ADD ? sum : x) + row * C;  // what is normalised: the sums once pass 1 wrote them
  T* yr = y + row * C;
  constexpr int P = VEC ? Pack<T>::N : 1;
  float acc = 0.0f;
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      Pack<T> v = load_pack(xin + c);
      if constexpr (ADD) {
        const Pack<T> vr = load_pack(r + row * C + c);
#pragma unroll
        for (int k = 0; k < P; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) + to_float(vr.v[k]));
        store_pack(sum + row * C + c, v);
      }
#pragma unroll
      for (int k = 0; k < P; ++k) acc += to_float(v.v[k]);
    } else {
      T v = xin[c];
      if constexpr (ADD) {
        v = from_float<T>(to_float(v) + to_float(r[row * C + c]));
        sum[row * C + c] = v;
      }
      acc += to_float(v);
    }
  }
  const float mu = warp_sum(acc) / float(C);
  float var = 0.0f;
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      const Pack<T> v = load_pack(xr + c);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const float d = to_float(v.v[k]) - mu;
        var += d * d;
      }
    } else {
      const float d = to_float(xr[c]) - mu;
      var += d * d;
    }
  }
  const float rs = 1.0f / sqrtf(warp_sum(var) / float(C) + eps);
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      Pack<T> v = load_pack(xr + c);
#pragma unroll
      for (int k = 0; k < P; ++k)
        v.v[k] = from_float<T>((to_float(v.v[k]) - mu) * rs * to_float(w[c + k]) + to_float(b[c + k]));
      store_pack(yr + c, v);
    } else {
      yr[c] = from_float<T>((to_float(xr[c]) - mu) * rs * to_float(w[c]) + to_float(b[c]));
    }
  }
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

// The forward with the row in registers: lane `lane` holds packs lane + 32 j, j < PACKS (the
// columns the loop kernel above visits, summed in the same order), loaded at once;
// the statistics and y come from the registers. One DRAM round trip per row instead of a
// dependent load per pack. Needs the 16-byte path and C <= 32 PACKS P.
template <class T, class W, bool ADD, int PACKS>
__global__ void layernorm_forward_packed_kernel(const T* x, const T* r, T* sum, const W* w, const W* b, float eps,
                                                T* y, float* mean, float* rstd, int64_t N, int C) {
  constexpr int P = Pack<T>::N;
  constexpr int kSpan = 32 * P;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= N) return;
  const int64_t off = row * C;
  Pack<T> v[PACKS];
#pragma unroll
  for (int j = 0; j < PACKS; ++j) {
    const int c = j * kSpan + lane * P;
    if (c < C) {
      v[j] = load_pack(x + off + c);
      if constexpr (ADD) {
        const Pack<T> vr = load_pack(r + off + c);
#pragma unroll
        for (int k = 0; k < P; ++k) v[j].v[k] = from_float<T>(to_float(v[j].v[k]) + to_float(vr.v[k]));
      }
    }
  }
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < PACKS; ++j) {
    const int c = j * kSpan + lane * P;
    if (c < C) {
      if constexpr (ADD) store_pack(sum + off + c, v[j]);
#pragma unroll
      for (int k = 0; k < P; ++k) acc += to_float(v[j].v[k]);
    }
  }
  const float mu = warp_sum(acc) / float(C);
  float var = 0.0f;
#pragma unroll
  for (int j = 0; j < PACKS; ++j) {
    const int c = j * kSpan + lane * P;
    if (c < C) {
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const float d = to_float(v[j].v[k]) - mu;
        var += d * d;
      }
    }
  }
  const float rs = 1.0f / sqrtf(warp_sum(var) / float(C) + eps);
#pragma unroll
  for (int j = 0; j < PACKS; ++j) {
    const int c = j * kSpan + lane * P;
    if (c < C) {
      Pack<T> o;
#pragma unroll
      for (int k = 0; k < P; ++k)
        o.v[k] = from_float<T>((to_float(v[j].v[k]) - mu) * rs * to_float(w[c + k]) + to_float(b[c + k]));
      store_pack(y + off + c, o);
    }
  }
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}
// Widest rows the packed forward takes: 8 packs a lane (2048 columns at 16 bits, 1024 at fp32);
// with the residual add 4 (1024 | 512): at 8 packs of x and r a lane the packed add + LayerNorm
// ran 8% slower than the loop kernel (bf16 C = 2048, H200), at 3 and 4 packs 5-6% faster.
constexpr int kForwardMaxPacks = 8, kForwardMaxPacksAdd = 4;

// Pass 1 of dw/db: partial sums over a chunk of rows for kColTile columns.
template <class T>
__global__ void layernorm_dwdb_partial_kernel(const T* dy, const T* x, const float* mean, const float* rstd,
                                              int64_t N, int64_t C, int64_t chunk_rows, float* dw_partial,
                                              float* db_partial) {
  __shared__ float shared[kRowThreads][kColTile + 1];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < N ? r0 + chunk_rows : N;
  float dw = 0.0f, db = 0.0f;
  if (c < C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) {
      const float g = to_float(dy[r * C + c]);
      dw += g * ((to_float(x[r * C + c]) - mean[r]) * rstd[r]);
      db += g;
    }
  }
  const float dw_total = column_block_total(dw, shared);
  const float db_total = column_block_total(db, shared);
  if (threadIdx.y == 0 && c < C) {
    dw_partial[int64_t(blockIdx.y) * C + c] = dw_total;
    db_partial[int64_t(blockIdx.y) * C + c] = db_total;
  }
}

// ADD: dx = LN's dx + dres (dres must not alias dx).
template <class T, class W, bool VEC, bool ADD>
__global__ void layernorm_dx_kernel(const T* dy, const T* x, const W* w, const float* mean, const float* rstd,
                                    const T* dres, T* dx, int64_t N, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= N) return;
  const T* dyr = dy + row * C;
  const T* xr = x + row * C;
  T* dxr = dx + row * C;
  const float mu = mean[row], rs = rstd[row];
  constexpr int P = VEC ? Pack<T>::N : 1;
  float g_sum = 0.0f, gn_sum = 0.0f;
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      const Pack<T> vg = load_pack(dyr + c), vx = load_pack(xr + c);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const float g = to_float(vg.v[k]) * to_float(w[c + k]);
        g_sum += g;
        gn_sum += g * ((to_float(vx.v[k]) - mu) * rs);
      }
    } else {
      const float g = to_float(dyr[c]) * to_float(w[c]);
      g_sum += g;
      gn_sum += g * ((to_float(xr[c]) - mu) * rs);
    }
  }
  const float g_mean = warp_sum(g_sum) / float(C), gn_mean = warp_sum(gn_sum) / float(C);
  for (int c = lane * P; c < C; c += 32 * P) {
    if constexpr (VEC) {
      Pack<T> vg = load_pack(dyr + c);
      const Pack<T> vx = load_pack(xr + c);
      Pack<T> vres;
      if constexpr (ADD) vres = load_pack(dres + row * C + c);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const float g = to_float(vg.v[k]) * to_float(w[c + k]), n = (to_float(vx.v[k]) - mu) * rs;
        const float d = rs * (g - g_mean - n * gn_mean);
        vg.v[k] = from_float<T>(ADD ? d + to_float(vres.v[k]) : d);
      }
      store_pack(dxr + c, vg);
    } else {
      const float g = to_float(dyr[c]) * to_float(w[c]), n = (to_float(xr[c]) - mu) * rs;
      const float d = rs * (g - g_mean - n * gn_mean);
      dxr[c] = from_float<T>(ADD ? d + to_float(dres[row * C + c]) : d);
    }
  }
}

constexpr int kFusedWarps = 8;         // rows in flight per block of the fused backward
constexpr int kFusedRowsPerWarp = 8;   // rows a warp walks (fewer blocks: fewer partial rows)
constexpr int kFusedMaxBlocks = 1024;  // past N = 64K rows, warps walk more rows instead
// Most 16-byte packs of a row a lane holds (C <= 32 * 8 packs: 2048 at 16 bits, 1024 at fp32):
// at 8 the dw, db sums (128 floats at 16 bits) and the row's packs take up to 254 registers.
constexpr int kFusedMaxPacks = 8;

// Registers that stay live across a row of the fused kernel: the dw, db sums (2 PACKS N floats,
// N = Pack<T>::N) and 4 a pack for the row's dy and x. dres is copied into shared memory with
// cp.async as dy and x are loaded, and read from there as dx is written: one wait per row, no
// registers. (Loading dres into registers instead spilled at 8 packs a lane unless loaded two
// packs at a time as dx was written, four more waits per row: 21% slower at bf16 C = 2048, 14% at
// 1024, measured with bench/layernorm_bench.) Two blocks (16 warps) per SM are asked for where
// the live registers fit in 100 of the 128 (bf16 C <= 1024, fp32 C <= 768); else one (8 warps).
// From ptxas -v: no spills.
template <class T, int PACKS>
constexpr int kFusedMinBlocks = 2 * PACKS * Pack<T>::N + 2 * PACKS * 4 <= 100 ? 2 : 1;

// cp.async: 16 bytes from global to shared memory without passing through registers; visible to
// the issuing thread after cp_async_wait_all.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Keeps a pack in its 4 registers across the warp reduction: without this the compiler keeps
// the converted floats (twice the registers at 16 bits) live from the first pass to the second.
template <class T>
__device__ __forceinline__ void keep_packed(Pack<T>& p) {
  uint4 u;
  memcpy(&u, &p, sizeof(u));
  asm volatile("" : "+r"(u.x), "+r"(u.y), "+r"(u.z), "+r"(u.w));
  memcpy(&p, &u, sizeof(u));
}

// The fused backward's grid: a function of N only, so the summation order (and the bits of
// dw, db) do not depend on the device.
inline int fused_blocks(int64_t N) {
  const int64_t want = ceil_div(N, int64_t(kFusedWarps) * kFusedRowsPerWarp);
  return int(want < kFusedMaxBlocks ? want : kFusedMaxBlocks);
}

// Fused backward (see the top of the file). Lane `lane` owns packs lane + 32 j, j < PACKS, of
// every row (columns (lane + 32 j) P + q); packs at or past C are skipped. partial is
// [2, gridDim.x, C]: the block's dw sums, then its db sums. ADD: dx += dres (dres must not alias
// dx); dx may alias dy (each lane writes only the packs it read, after reading them). w is
// fp32 (w_f32) or T: it is read once per block into shared memory, so a flag rather than a
// template parameter (half the instantiations, the same code per row). ADD: dres goes through
// shared memory (see kFusedMinBlocks); a warp's staging area [PACKS][32 lanes] of 16-byte packs
// shares its memory with the final block reduction's `red`.
template <class T, bool ADD, int PACKS>
__global__ void __launch_bounds__(32 * kFusedWarps, kFusedMinBlocks<T, PACKS>)
    layernorm_backward_fused_kernel(const T* dy, const T* x, const void* w, bool w_f32, const float* mean,
                                    const float* rstd, const T* dres, T* dx, int64_t N, int C, float* partial) {
  constexpr int P = Pack<T>::N;
  constexpr int kSpan = 32 * P;  // columns of one pack index j across the warp
  constexpr int kRedBytes = 2 * kFusedWarps * kSpan * int(sizeof(float));
  constexpr int kStageBytes = ADD ? kFusedWarps * PACKS * 32 * 16 : 0;
  __shared__ alignas(16) float w_s[PACKS * kSpan];
  __shared__ alignas(16) unsigned char scratch[kRedBytes > kStageBytes ? kRedBytes : kStageBytes];
  auto red = reinterpret_cast<float(*)[kFusedWarps][kSpan]>(scratch);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Pack<T>* stage = reinterpret_cast<Pack<T>*>(scratch) + warp * PACKS * 32;  // [PACKS][32]: ADD only
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    w_s[c] = w_f32 ? static_cast<const float*>(w)[c] : to_float(static_cast<const T*>(w)[c]);
  __syncthreads();

  float dw[PACKS][P], db[PACKS][P];
#pragma unroll
  for (int j = 0; j < PACKS; ++j)
#pragma unroll
    for (int q = 0; q < P; ++q) dw[j][q] = db[j][q] = 0.0f;

  const int64_t stride = int64_t(gridDim.x) * kFusedWarps;
  for (int64_t row = int64_t(blockIdx.x) * kFusedWarps + warp; row < N; row += stride) {
    const int64_t off = row * C;
    const float mu = mean[row], rs = rstd[row];
    Pack<T> vg[PACKS], vx[PACKS];
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = j * kSpan + lane * P;
      if (c < C) {
        vg[j] = load_pack(dy + off + c);
        vx[j] = load_pack(x + off + c);
        if constexpr (ADD) cp_async16(&stage[j * 32 + lane], dres + off + c);
      }
    }
    float g_sum = 0.0f, gn_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = j * kSpan + lane * P;
      if (c < C) {
#pragma unroll
        for (int q = 0; q < P; ++q) {
          const float d = to_float(vg[j].v[q]), n = (to_float(vx[j].v[q]) - mu) * rs, g = d * w_s[c + q];
          g_sum += g;
          gn_sum += g * n;
          dw[j][q] += d * n;
          db[j][q] += d;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      keep_packed(vg[j]);
      keep_packed(vx[j]);
    }
    const float g_mean = warp_sum(g_sum) / float(C), gn_mean = warp_sum(gn_sum) / float(C);
    if constexpr (ADD) cp_async_wait_all();
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const int c = j * kSpan + lane * P;
      if (c < C) {
        Pack<T> out;
#pragma unroll
        for (int q = 0; q < P; ++q) {
          const float g = to_float(vg[j].v[q]) * w_s[c + q], n = (to_float(vx[j].v[q]) - mu) * rs;
          const float d = rs * (g - g_mean - n * gn_mean);
          if constexpr (ADD) out.v[q] = from_float<T>(d + to_float(stage[j * 32 + lane].v[q]));
          else out.v[q] = from_float<T>(d);
        }
        store_pack(dx + off + c, out);
      }
    }
  }

  // Block sums, a pack index at a time: every warp parks its kSpan dw and db values, then each
  // thread adds one column's kFusedWarps values in warp order and writes the block's partial.
  if constexpr (ADD) __syncthreads();  // red reuses the other warps' staging areas
  const int64_t blocks = gridDim.x;
#pragma unroll
  for (int j = 0; j < PACKS; ++j) {
    if (j * kSpan >= C) break;  // the same for the whole block
#pragma unroll
    for (int q = 0; q < P; q += 4) {
      float4* to_dw = reinterpret_cast<float4*>(&red[0][warp][lane * P + q]);
      float4* to_db = reinterpret_cast<float4*>(&red[1][warp][lane * P + q]);
      *to_dw = make_float4(dw[j][q], dw[j][q + 1], dw[j][q + 2], dw[j][q + 3]);
      *to_db = make_float4(db[j][q], db[j][q + 1], db[j][q + 2], db[j][q + 3]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 2 * kSpan; i += blockDim.x) {
      const int a = i / kSpan, t = i % kSpan, c = j * kSpan + t;
      float total = red[a][0][t];
#pragma unroll
      for (int k = 1; k < kFusedWarps; ++k) total += red[a][k][t];
      if (c < C) partial[(a * blocks + blockIdx.x) * C + c] = total;
    }
    __syncthreads();
  }
}

// Calls fn(TypeTag<T>, TypeTag<W>) with W = float for fp32 weights, else T.
template <class Fn>
void dispatch_ln(DType x, DType w, Fn&& fn) {
  dispatch_float(x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (w == DType::F32) fn(tag, TypeTag<float>{});
    else fn(tag, TypeTag<T>{});
  });
}

}  // namespace

namespace {

// Launches the packed forward with PACKS = packs (1 <= packs <= kForwardMaxPacks, or
// kForwardMaxPacksAdd with ADD).
template <class T, class W, bool ADD, int PACKS = 1>
void launch_forward_packed(int packs, int grid, const T* x, const T* r, T* sum, const W* w, const W* b, float eps,
                           T* y, float* mean, float* rstd, int64_t N, int C, cudaStream_t st) {
  if constexpr (PACKS <= (ADD ? kForwardMaxPacksAdd : kForwardMaxPacks)) {
    if (packs != PACKS)
      return launch_forward_packed<T, W, ADD, PACKS + 1>(packs, grid, x, r, sum, w, b, eps, y, mean, rstd, N, C, st);
    layernorm_forward_packed_kernel<T, W, ADD, PACKS><<<grid, 32 * kWarps, 0, st>>>(x, r, sum, w, b, eps, y, mean,
                                                                                    rstd, N, C);
  }
}

// sum/r may be null (plain LayerNorm).
void forward(const Tensor& x, const Tensor* r, const Tensor* sum, const Tensor& w, const Tensor& b, float eps,
             const Tensor& y, const Tensor& mean, const Tensor& rstd, Stream s) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (N == 0) return;
  MT_CHECK(C < (int64_t(1) << 31), "layernorm: C = {} too large", C);
  CudaDeviceGuard guard(x.device().index);
  const int grid = int(ceil_div(N, kWarps));
  dispatch_ln(x.dtype(), w.dtype(), [&](auto ttag, auto wtag) {
    using T = typename decltype(ttag)::type;
    using W = typename decltype(wtag)::type;
    const T* px = static_cast<const T*>(x.raw());
    const T* pr = r ? static_cast<const T*>(r->raw()) : nullptr;
    T* psum = sum ? static_cast<T*>(sum->raw()) : nullptr;
    T* py = static_cast<T*>(y.raw());
    const W* pw = static_cast<const W*>(w.raw());
    const W* pb = static_cast<const W*>(b.raw());
    const bool vec = C % Pack<T>::N == 0 && aligned16(px) && aligned16(py) && (!r || (aligned16(pr) && aligned16(psum)));
    const int64_t packs = ceil_div(C / Pack<T>::N, 32);  // per lane
    if (vec && packs <= (r ? kForwardMaxPacksAdd : kForwardMaxPacks)) {
      float* pm = mean.data<float>();
      float* prs = rstd.data<float>();
      if (r)
        launch_forward_packed<T, W, true>(int(packs), grid, px, pr, psum, pw, pb, eps, py, pm, prs, N, int(C),
                                          stream_of(s));
      else
        launch_forward_packed<T, W, false>(int(packs), grid, px, pr, psum, pw, pb, eps, py, pm, prs, N, int(C),
                                           stream_of(s));
      MT_CUDA_CHECK_LAUNCH();
      return;
    }
    auto launch = [&](auto kernel) {
      kernel<<<grid, 32 * kWarps, 0, stream_of(s)>>>(px, pr, psum, pw, pb, eps, py, mean.data<float>(),
                                                      rstd.data<float>(), N, int(C));
    };
    if (r)
      vec ? launch(layernorm_forward_kernel<T, W, true, true>) : launch(layernorm_forward_kernel<T, W, false, true>);
    else
      vec ? launch(layernorm_forward_kernel<T, W, true, false>) : launch(layernorm_forward_kernel<T, W, false, false>);
  });
  MT_CUDA_CHECK_LAUNCH();
}

// Launches the fused kernel with PACKS = packs (1 <= packs <= kFusedMaxPacks).
template <class T, int PACKS = 1>
void launch_fused(int packs, int blocks, const T* dy, const T* x, const void* w, bool w_f32, const float* mean,
                  const float* rstd, const T* dres, T* dx, int64_t N, int C, float* partial, cudaStream_t st) {
  if constexpr (PACKS <= kFusedMaxPacks) {
    if (packs != PACKS)
      return launch_fused<T, PACKS + 1>(packs, blocks, dy, x, w, w_f32, mean, rstd, dres, dx, N, C, partial, st);
    auto kernel =
        dres ? layernorm_backward_fused_kernel<T, true, PACKS> : layernorm_backward_fused_kernel<T, false, PACKS>;
    kernel<<<blocks, 32 * kFusedWarps, 0, st>>>(dy, x, w, w_f32, mean, rstd, dres, dx, N, C, partial);
  }
}

// dres may be null (plain LayerNorm backward).
void backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
              const Tensor* dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum, Stream s) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (N == 0) return;
  MT_CHECK(C < (int64_t(1) << 31), "layernorm: C = {} too large", C);
  CudaDeviceGuard guard(x.device().index);
  const cudaStream_t st = stream_of(s);
  dispatch_ln(x.dtype(), w.dtype(), [&](auto ttag, auto wtag) {
    using T = typename decltype(ttag)::type;
    using W = typename decltype(wtag)::type;
    const T* pdy = static_cast<const T*>(dy.raw());
    const T* px = static_cast<const T*>(x.raw());
    const T* pres = dres ? static_cast<const T*>(dres->raw()) : nullptr;
    T* pdx = static_cast<T*>(dx.raw());
    const W* pw = static_cast<const W*>(w.raw());
    const float* pmean = mean.data<float>();
    const float* prstd = rstd.data<float>();
    const bool vec =
        C % Pack<T>::N == 0 && aligned16(pdy) && aligned16(px) && aligned16(pdx) && (!dres || aligned16(pres));
    const int64_t packs = ceil_div(C / Pack<T>::N, 32);  // per lane
    if (vec && packs <= kFusedMaxPacks) {
      const int blocks = fused_blocks(N);
      Tensor partial = Tensor::empty({2, blocks, C}, DType::F32, x.device());
      launch_fused<T>(int(packs), blocks, pdy, px, pw, std::is_same_v<W, float>, pmean, prstd, pres, pdx, N, int(C),
                      partial.data<float>(), st);
      MT_CUDA_CHECK_LAUNCH();
      column_finish_pair(partial.data<float>(), blocks, C, dw_accum.data<float>(), db_accum.data<float>(), st);
      return;
    }

    const int64_t chunk_rows = column_chunk_rows(N), chunks = ceil_div(N, chunk_rows);
    Tensor partial = Tensor::empty({2, chunks, C}, DType::F32, x.device());
    float* dw_partial = partial.data<float>();
    float* db_partial = dw_partial + chunks * C;
    const dim3 grid(unsigned(ceil_div(C, kColTile)), unsigned(chunks)), block(kColTile, kRowThreads);
    layernorm_dwdb_partial_kernel<T><<<grid, block, 0, st>>>(pdy, px, pmean, prstd, N, C, chunk_rows, dw_partial,
                                                             db_partial);
    MT_CUDA_CHECK_LAUNCH();
    column_finish_pair(dw_partial, chunks, C, dw_accum.data<float>(), db_accum.data<float>(), st);
    const int rows_grid = int(ceil_div(N, kWarps));
    auto launch = [&](auto kernel) {
      kernel<<<rows_grid, 32 * kWarps, 0, st>>>(pdy, px, pw, pmean, prstd, pres, pdx, N, int(C));
    };
    if (dres)
      vec ? launch(layernorm_dx_kernel<T, W, true, true>) : launch(layernorm_dx_kernel<T, W, false, true>);
    else
      vec ? launch(layernorm_dx_kernel<T, W, true, false>) : launch(layernorm_dx_kernel<T, W, false, false>);
    MT_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd, Stream s) {
  forward(x, nullptr, nullptr, w, b, eps, y, mean, rstd, s);
}

void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd, Stream s) {
  forward(x, &r, &sum, w, b, eps, y, mean, rstd, s);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum, Stream s) {
  backward(dy, x, w, mean, rstd, nullptr, dx, dw_accum, db_accum, s);
}

void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                            const Tensor& dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum,
                            Stream s) {
  backward(dy, x, w, mean, rstd, &dres, dx, dw_accum, db_accum, s);
}

}  // namespace mt::cuda
