// LayerNorm over the last dimension C of x [N, C], fp32 statistics:
//   forward:  mean = sum x / C, rstd = 1/sqrt(sum (x - mean)^2 / C + eps), y = (x - mean) rstd w + b
//   backward: n = (x - mean) rstd, g = dy w,
//             dx = rstd (g - mean(g) - n mean(g n)),  dw += sum_rows dy n,  db += sum_rows dy
// Forward: a warp per row, three passes over the row (sum, centred sum of squares, normalise);
// the second and third hit L1/L2, so DRAM sees one read of x and one write of y. 16-byte
// accesses when C is a multiple of the pack and the tensors are aligned.
// Backward: dw, db first, as a deterministic column reduction (column_reduce.cuh; reads dy and x
// once), then dx with a warp per row (reads dy and x again, writes dx). dw/db before dx lets dx
// alias dy. Two reads of dy and x where a fused kernel would do one: simple and bit-reproducible.
// add_layernorm_forward: the forward kernel's first pass reads x and r, writes their sum (rounded
// to T, so LN sees exactly the stored residual stream) and the next passes re-read the sums this
// thread just wrote (L1/L2); DRAM: reads x, r, writes sum, y. layernorm_backward_add: the dx
// kernel adds dres as it writes dx (one more read, no separate add pass).
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

// dres may be null (plain LayerNorm backward).
void backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
              const Tensor* dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum, Stream s) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (N == 0) return;
  MT_CHECK(C < (int64_t(1) << 31), "layernorm: C = {} too large", C);
  CudaDeviceGuard guard(x.device().index);
  const cudaStream_t st = stream_of(s);
  const int64_t chunk_rows = column_chunk_rows(N), chunks = ceil_div(N, chunk_rows);
  Tensor partial = Tensor::empty({2, chunks, C}, DType::F32, x.device());
  float* dw_partial = partial.data<float>();
  float* db_partial = dw_partial + chunks * C;
  dispatch_ln(x.dtype(), w.dtype(), [&](auto ttag, auto wtag) {
    using T = typename decltype(ttag)::type;
    using W = typename decltype(wtag)::type;
    const T* pdy = static_cast<const T*>(dy.raw());
    const T* px = static_cast<const T*>(x.raw());
    const T* pres = dres ? static_cast<const T*>(dres->raw()) : nullptr;
    T* pdx = static_cast<T*>(dx.raw());
    const W* pw = static_cast<const W*>(w.raw());
    const dim3 grid(unsigned(ceil_div(C, kColTile)), unsigned(chunks)), block(kColTile, kRowThreads);
    layernorm_dwdb_partial_kernel<T><<<grid, block, 0, st>>>(pdy, px, mean.data<float>(), rstd.data<float>(), N, C,
                                                             chunk_rows, dw_partial, db_partial);
    MT_CUDA_CHECK_LAUNCH();
    column_finish(dw_partial, chunks, C, dw_accum.data<float>(), st);
    column_finish(db_partial, chunks, C, db_accum.data<float>(), st);
    const int rows_grid = int(ceil_div(N, kWarps));
    const bool vec =
        C % Pack<T>::N == 0 && aligned16(pdy) && aligned16(px) && aligned16(pdx) && (!dres || aligned16(pres));
    auto launch = [&](auto kernel) {
      kernel<<<rows_grid, 32 * kWarps, 0, st>>>(pdy, px, pw, mean.data<float>(), rstd.data<float>(), pres, pdx, N,
                                                int(C));
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
