// GEMM on the CPU: C[m,n] = alpha * op(A) @ op(B) + beta * C (+ bias[n]), row-major, in fp32.
// bf16/fp16 operands are first widened into fp32 scratch (one extra read of A and B and a write
// of their fp32 copies), and a half C goes through fp32 scratch too (read if beta != 0, written
// back once with the bias fused). fp32 C is updated in place.
//
// On the AVX-512 and AVX2 paths (kernels/cpu_isa.h): our kernel through its multi-threaded
// driver (gemm_tiles.h), which packs each operand once and shares it between tiles; each
// element's arithmetic depends on k only, so the thread count cannot change the result, and an
// fp32 C gets its bias in the tile epilogue.
//
// On the portable path OpenBLAS, whose own threading is not bit-reproducible across thread counts (how it
// splits C moves rows between its edge and main micro-kernels). So C is cut into tiles whose
// size depends only on the shape, and each tile is one single-threaded sgemm (OpenBLAS runs
// single-threaded inside an OpenMP parallel region): every element sees the same arithmetic
// for any thread count. Each tile re-packs its slices of A and B, ~1/tile of the FLOPs in
// extra traffic.
//
// gemm_bias_gelu / gemm_dgelu / gemm_wgrad_bgrad are by definition the unfused sequences gemm.h
// gives. On our kernels' paths with fp32 C the bias and the GeLU (or GeLU') run on each tile of
// C as soon as it is done, while it is in cache (gemm_tiles.h), and the bias gradient of
// gemm_wgrad_bgrad is summed while dy^T is packed; all with the same bits as the separate ops
// (gelu_forward / gelu_backward use the same path's code). Elsewhere the sequence runs op by op.
//
// bias_grad_accumulate: db[c] += sum_n dy[n, c]. Threads own blocks of columns and walk the
// rows in order, so every column is summed in the same order for any thread count.

#include <algorithm>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"
#include "kernels/cpu_isa.h"
#if defined(__x86_64__)
#include "kernels/cpu/gemm_tiles.h"
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

// Whether our packed kernels (AVX-512 or AVX2) run GEMMs.
bool packed_path() {
#if defined(__x86_64__)
  return cpu_isa() != CpuIsa::kPortable;
#else
  return false;
#endif
}

// The fp32 product through our kernels with the epilogue fused, when that applies (the AVX-512
// or AVX2 path, fp32 C, k > 0); returns whether it ran.
bool fused_packed(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c, float alpha, float beta,
                  const TileEpilogue& ep) {
#if defined(__x86_64__)
  const int64_t m = c.size(0), n = c.size(1), k = ta ? a.size(0) : a.size(1);
  if (c.dtype() != DType::F32 || k == 0 || !packed_path()) return false;
  if (m == 0 || n == 0) return true;
  Tensor af = as_f32(a), bf = as_f32(b);
  parallel_sgemm(ta, tb, m, n, k, alpha, af.data<float>(), a.size(1), bf.data<float>(), b.size(1), beta,
                 c.data<float>(), ep);
  return true;
#else
  return false;
#endif
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha, float beta,
          const Tensor* bias) {
  const int64_t m = c.size(0), n = c.size(1), k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return;
  const std::vector<float> bias_f32 = to_f32_vector(bias);
  TileEpilogue ep;
  ep.bias = bias_f32.empty() ? nullptr : bias_f32.data();
  if (fused_packed(a, trans_a, b, trans_b, c, alpha, beta, ep)) return;
  const bool c_is_f32 = c.dtype() == DType::F32;
  Tensor cf = c_is_f32 ? c : (beta != 0.0f ? as_f32(c) : Tensor::empty({m, n}, DType::F32));
  float* cp = cf.data<float>();
  if (k == 0) {  // BLAS implementations disagree on k = 0; the answer is beta * C.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m * n; ++i) cp[i] = beta == 0.0f ? 0.0f : beta * cp[i];
  } else {
    Tensor af = as_f32(a), bf = as_f32(b);
#if defined(__x86_64__)
    if (packed_path()) {
      parallel_sgemm(trans_a, trans_b, m, n, k, alpha, af.data<float>(), a.size(1), bf.data<float>(), b.size(1),
                     beta, cp);
    } else
#endif
    {
      tiled_sgemm(trans_a, trans_b, m, n, k, alpha, af.data<float>(), a.size(1), bf.data<float>(), b.size(1), beta,
                  cp);
    }
  }
  if (c_is_f32 && bias_f32.empty()) return;
  dispatch_float(c.dtype(), [&](auto tag) { finish(cp, bias_f32, c.data<decltype(tag)>(), m, n); });
}

std::vector<int64_t> gemm_workspace(int64_t m, int64_t n, int64_t k, DType in, DType out) {
  std::vector<int64_t> w;
  if (m == 0 || n == 0 || k == 0) return w;
  if (in != DType::F32) w = {4 * m * k, 4 * k * n};  // as_f32 of A and B
  if (out != DType::F32) w.push_back(4 * m * n);     // C accumulated in fp32
#if defined(__x86_64__)
  if (packed_path()) {
    w.push_back(4 * packed_a_floats(m, k));
    w.push_back(4 * packed_b_floats(k, n));
  }
#endif
  return w;
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
  const std::vector<float> bias_f32 = to_f32_vector(bias);
  TileEpilogue ep;
  ep.bias = bias_f32.empty() ? nullptr : bias_f32.data();
  ep.gelu_out = y.dtype() == DType::F32 ? y.data<float>() : nullptr;
  if (ep.gelu_out && fused_packed(a, trans_a, b, trans_b, pre, 1.0f, 0.0f, ep)) return;
  gemm(a, trans_a, b, trans_b, pre, 1.0f, 0.0f, bias);
  gelu_forward(pre, y);
}

void gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre, const Tensor& dpre,
                const Tensor* db_accum) {
  TileEpilogue ep;
  ep.dgelu_pre = pre.dtype() == DType::F32 ? pre.data<float>() : nullptr;
  if (!ep.dgelu_pre || !fused_packed(a, trans_a, b, trans_b, dpre, 1.0f, 0.0f, ep)) {
    gemm(a, trans_a, b, trans_b, dpre, 1.0f, 0.0f, nullptr);
    gelu_backward(dpre, pre, dpre);
  }
  if (db_accum) bias_grad_accumulate(dpre, *db_accum);
}

void gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum,
                      float dw_beta) {
#if defined(__x86_64__)
  // fp32 on our kernels' paths: dy's column sums are taken while dy^T is packed, in row order from
  // zero and then added to db, which is bias_grad_t's arithmetic: the same bits, one read fewer.
  const int64_t out = dw_accum.size(0), in = dw_accum.size(1), N = dy.size(0);
  if (dy.dtype() == DType::F32 && N > 0 && out > 0 && in > 0 && packed_path()) {
    std::vector<float> sums(size_t(out), 0.0f);
    parallel_sgemm(true, false, out, in, N, 1.0f, dy.data<float>(), out, x.data<float>(), in, dw_beta,
                   dw_accum.data<float>(), {}, sums.data());
    float* db = db_accum.data<float>();
    for (int64_t i = 0; i < out; ++i) db[i] += sums[size_t(i)];
    return;
  }
#endif
  gemm(dy, true, x, false, dw_accum, 1.0f, dw_beta, nullptr);
  bias_grad_accumulate(dy, db_accum);
}

}  // namespace mt::cpu
