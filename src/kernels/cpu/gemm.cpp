// GEMM on the CPU: C[m,n] = alpha * op(A) @ op(B) + beta * C (+ bias[n]), row-major, in fp32.
// bf16/fp16 operands are first widened into fp32 scratch (one extra read of A and B and a write
// of their fp32 copies), and a half C goes through fp32 scratch too (read if beta != 0, written
// back once with the bias fused). fp32 C is updated in place.
//
// With AVX-512 (sgemm_avx512.h): the threads first pack op(A) and op(B) once, each a share of
// the rows or columns, into the kernel's panel order, then compute tiles of C from the shared
// packed operands. Each element's arithmetic depends on k only, so any tiling gives the same
// bits; packing once instead of per tile saved ~15% of the GEMM time at the model's shapes.
//
// Otherwise OpenBLAS, whose own threading is not bit-reproducible across thread counts (how it
// splits C moves rows between its edge and main micro-kernels). So C is cut into tiles whose
// size depends only on the shape, and each tile is one single-threaded sgemm (OpenBLAS runs
// single-threaded inside an OpenMP parallel region): every element sees the same arithmetic
// for any thread count. Each tile re-packs its slices of A and B, ~1/tile of the FLOPs in
// extra traffic.
//
// gemm_bias_gelu / gemm_dgelu / gemm_wgrad_bgrad: the reference is the unfused sequence gemm.h defines them by,
// each op run as itself (so the CPU model computes exactly what it did before they existed).
//
// bias_grad_accumulate: db[c] += sum_n dy[n, c]. Threads own blocks of columns and walk the
// rows in order, so every column is summed in the same order for any thread count.

#include <algorithm>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"
#if defined(__x86_64__)
#include "kernels/cpu/sgemm_avx512.h"
#endif

namespace mt::cpu {
namespace {

// t itself when it is fp32, else a widened fp32 copy.
Tensor as_f32(const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor f = Tensor::empty(t.shape(), DType::F32);
  const int64_t n = t.numel();
  float* dst = f.data<float>();
  dispatch_float(t.dtype(), [&](auto tag) {
    const auto* src = t.data<decltype(tag)>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = to_f32(src[i]);
  });
  return f;
}

// c[i, :] = acc[i, :] + bias  (bias may be empty; acc may be c's own data when c is fp32).
template <class T>
void finish(const float* acc, const std::vector<float>& bias, T* c, int64_t m, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    const float* a = acc + i * n;
    T* ci = c + i * n;
    if (bias.empty()) {
      for (int64_t j = 0; j < n; ++j) ci[j] = from_f32<T>(a[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) ci[j] = from_f32<T>(a[j] + bias[j]);
    }
  }
}

// The tile edge: 256, halved (down to 64) while C has fewer than 16 tiles, so small products
// still spread over threads. A function of the shape only.
int64_t tile_edge(int64_t m, int64_t n) {
  int64_t t = 256;
  while (t > 64 && ((m + t - 1) / t) * ((n + t - 1) / t) < 16) t /= 2;
  return t;
}

void tiled_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c) {
  const int64_t t = tile_edge(m, n), mt = (m + t - 1) / t, nt = (n + t - 1) / t;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t tile = 0; tile < mt * nt; ++tile) {
    const int64_t i0 = (tile / nt) * t, j0 = (tile % nt) * t;
    const int64_t mm = std::min(t, m - i0), nn = std::min(t, n - j0);
    const float* ap = ta ? a + i0 : a + i0 * lda;  // rows i0.. of op(A)
    const float* bp = tb ? b + j0 * ldb : b + j0;  // columns j0.. of op(B)
    sgemm_serial(ta, tb, mm, nn, k, alpha, ap, lda, bp, ldb, beta, c + i0 * n + j0, n);
  }
}

#if defined(__x86_64__)
// Tiles of C for the AVX-512 path: up to 252 x 512, halved (rows first, to multiples of 14 and
// 32) while C has fewer than 16 tiles, so small products still spread over threads.
void avx512_tile(int64_t m, int64_t n, int64_t& tm, int64_t& tn) {
  tm = 18 * avx512::kRows;
  tn = 16 * avx512::kCols;
  auto tiles = [&] { return ((m + tm - 1) / tm) * ((n + tn - 1) / tn); };
  while (tiles() < 16 && (tm > 2 * avx512::kRows || tn > 2 * avx512::kCols)) {
    if (tm >= tn / 2 && tm > 2 * avx512::kRows) {
      tm = (tm / avx512::kRows + 1) / 2 * avx512::kRows;
    } else {
      tn = (tn / avx512::kCols + 1) / 2 * avx512::kCols;
    }
  }
}

void avx512_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c) {
  namespace x = avx512;
  Tensor pa_t = Tensor::empty({x::packed_a_floats(m, k)}, DType::F32);
  Tensor pb_t = Tensor::empty({x::packed_b_floats(k, n)}, DType::F32);
  float *pa = pa_t.data<float>(), *pb = pb_t.data<float>();
  constexpr int64_t kPackRows = 4 * x::kRows, kPackCols = 4 * x::kCols;  // per packing task
  const int64_t a_tasks = (m + kPackRows - 1) / kPackRows, b_tasks = (n + kPackCols - 1) / kPackCols;
  int64_t tm, tn;
  avx512_tile(m, n, tm, tn);
  const int64_t mt = (m + tm - 1) / tm, nt = (n + tn - 1) / tn;
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < a_tasks; ++t)
      x::pack_a(ta, a, lda, m, k, t * kPackRows, std::min(kPackRows, m - t * kPackRows), pa);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < b_tasks; ++t)
      x::pack_b(tb, b, ldb, k, n, t * kPackCols, std::min(kPackCols, n - t * kPackCols), pb);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < mt * nt; ++tile) {
      const int64_t i0 = (tile / nt) * tm, j0 = (tile % nt) * tn;
      x::gemm_packed(m, n, k, alpha, pa, pb, beta, c, n, i0, std::min(tm, m - i0), j0, std::min(tn, n - j0));
    }
  }
}
#endif

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha, float beta,
          const Tensor* bias) {
  const int64_t m = c.size(0), n = c.size(1), k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return;
  const bool c_is_f32 = c.dtype() == DType::F32;
  Tensor cf = c_is_f32 ? c : (beta != 0.0f ? as_f32(c) : Tensor::empty({m, n}, DType::F32));
  float* cp = cf.data<float>();
  if (k == 0) {  // BLAS implementations disagree on k = 0; the answer is beta * C.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m * n; ++i) cp[i] = beta == 0.0f ? 0.0f : beta * cp[i];
  } else {
    Tensor af = as_f32(a), bf = as_f32(b);
#if defined(__x86_64__)
    if (sgemm_avx512_available()) {
      avx512_sgemm(trans_a, trans_b, m, n, k, alpha, af.data<float>(), a.size(1), bf.data<float>(), b.size(1), beta,
                   cp);
    } else
#endif
    {
      tiled_sgemm(trans_a, trans_b, m, n, k, alpha, af.data<float>(), a.size(1), bf.data<float>(), b.size(1), beta,
                  cp);
    }
  }
  const std::vector<float> bias_f32 = to_f32_vector(bias);
  if (c_is_f32 && bias_f32.empty()) return;
  dispatch_float(c.dtype(), [&](auto tag) { finish(cp, bias_f32, c.data<decltype(tag)>(), m, n); });
}

namespace {

template <class T>
void bias_grad_t(const T* dy, float* db, int64_t N, int64_t C) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, w = std::min(kCols, C - c0);
    float acc[kCols] = {};
    for (int64_t r = 0; r < N; ++r) {
      const T* row = dy + r * C + c0;
      for (int64_t j = 0; j < w; ++j) acc[j] += to_f32(row[j]);
    }
    for (int64_t j = 0; j < w; ++j) db[c0 + j] += acc[j];
  }
}

}  // namespace

void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum) {
  const int64_t C = db_accum.numel(), N = C ? dy.numel() / C : 0;
  dispatch_float(dy.dtype(), [&](auto tag) { bias_grad_t(dy.data<decltype(tag)>(), db_accum.data<float>(), N, C); });
}

void gemm_bias_gelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor* bias, const Tensor& pre,
                    const Tensor& y) {
  gemm(a, trans_a, b, trans_b, pre, 1.0f, 0.0f, bias);
  gelu_forward(pre, y);
}

void gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre, const Tensor& dpre,
                const Tensor* db_accum) {
  gemm(a, trans_a, b, trans_b, dpre, 1.0f, 0.0f, nullptr);
  gelu_backward(dpre, pre, dpre);
  if (db_accum) bias_grad_accumulate(dpre, *db_accum);
}

void gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum) {
  gemm(dy, true, x, false, dw_accum, 1.0f, 1.0f, nullptr);
  bias_grad_accumulate(dy, db_accum);
}

}  // namespace mt::cpu
