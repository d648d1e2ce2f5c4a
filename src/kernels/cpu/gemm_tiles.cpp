// The packed GEMMs' OpenMP driver (gemm_tiles.h). Three work-shared loops in one parallel
// region: pack op(A) in chunks of rows, pack op(B) in chunks of columns, then tiles of C.
// Packing each operand once instead of once per tile saved ~15% of the GEMM time at the
// model's shapes (each tile used to re-read its slices from L3). Tiles are up to 252 x 512
// (252 is a multiple of both paths' micro-panel heights, 14 and 6): the packed kc x 512 block of
// B stays in L2 while a tile's row panels stream past it, and the tile (~0.5 MiB) is still in L2
// for its epilogue. The ISA's pieces come as one table of functions, chosen by cpu_isa().
#include "kernels/cpu/gemm_tiles.h"

#include <algorithm>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cpu/gelu_avx2.h"
#include "kernels/cpu/gelu_avx512.h"
#include "kernels/cpu/sgemm_avx2.h"
#include "kernels/cpu/sgemm_avx512.h"
#include "kernels/cpu_isa.h"

namespace mt::cpu {
namespace {

// One path's packed GEMM and GeLU (sgemm_avx512.h / sgemm_avx2.h, gelu_*.h).
struct PackedGemm {
  int64_t rows, cols;  // the micro-panel height and strip width
  int64_t (*packed_a_floats)(int64_t m, int64_t k);
  int64_t (*packed_b_floats)(int64_t k, int64_t n);
  void (*pack_a)(bool, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, float*);
  void (*pack_b)(bool, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
  void (*gemm_packed)(int64_t, int64_t, int64_t, float, const float*, const float*, float, float*, int64_t, int64_t,
                      int64_t, int64_t, int64_t);
  void (*gelu_forward)(const float*, float*, int64_t);
  void (*gelu_backward)(const float*, const float*, float*, int64_t);
};

constexpr PackedGemm kAvx512{avx512::kRows,          avx512::kCols,       &avx512::packed_a_floats,
                             &avx512::packed_b_floats, &avx512::pack_a,     &avx512::pack_b,
                             &avx512::gemm_packed,     &avx512::gelu_forward, &avx512::gelu_backward};
constexpr PackedGemm kAvx2{avx2::kRows,          avx2::kCols,       &avx2::packed_a_floats, &avx2::packed_b_floats,
                           &avx2::pack_a,        &avx2::pack_b,     &avx2::gemm_packed,     &avx2::gelu_forward,
                           &avx2::gelu_backward};

const PackedGemm& packed_gemm() {
  const CpuIsa isa = cpu_isa();
  MT_CHECK(isa != CpuIsa::kPortable, "parallel_sgemm on the portable path");
  return isa == CpuIsa::kAvx512 ? kAvx512 : kAvx2;
}

// Tiles up to 252 x 512, halved (the longer side first, keeping multiples of the panel height
// and strip width) while C has fewer than 16 tiles, so small products still spread over threads.
void tile_shape(const PackedGemm& x, int64_t m, int64_t n, int64_t& tm, int64_t& tn) {
  tm = 252 / x.rows * x.rows;
  tn = 512 / x.cols * x.cols;
  auto tiles = [&] { return ((m + tm - 1) / tm) * ((n + tn - 1) / tn); };
  while (tiles() < 16 && (tm > 2 * x.rows || tn > 2 * x.cols)) {
    if (tm >= tn / 2 && tm > 2 * x.rows) {
      tm = (tm / x.rows + 1) / 2 * x.rows;
    } else {
      tn = (tn / x.cols + 1) / 2 * x.cols;
    }
  }
}

void finish_tile(const PackedGemm& x, float* c, int64_t n, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                 const TileEpilogue& ep) {
  for (int64_t i = i0; i < i0 + rows; ++i) {
    float* ci = c + i * n + j0;
    if (ep.bias) {
      const float* bias = ep.bias + j0;
      for (int64_t j = 0; j < cols; ++j) ci[j] += bias[j];
    }
    if (ep.gelu_out) x.gelu_forward(ci, ep.gelu_out + i * n + j0, cols);
    if (ep.dgelu_pre) x.gelu_backward(ci, ep.dgelu_pre + i * n + j0, ci, cols);
  }
}

}  // namespace

int64_t packed_a_floats(int64_t m, int64_t k) { return packed_gemm().packed_a_floats(m, k); }
int64_t packed_b_floats(int64_t k, int64_t n) { return packed_gemm().packed_b_floats(k, n); }

void parallel_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, const TileEpilogue& ep, float* a_row_sums) {
  const PackedGemm& x = packed_gemm();
  Tensor pa_t = Tensor::empty({x.packed_a_floats(m, k)}, DType::F32);
  Tensor pb_t = Tensor::empty({x.packed_b_floats(k, n)}, DType::F32);
  float *pa = pa_t.data<float>(), *pb = pb_t.data<float>();
  const int64_t pack_rows = 56 / x.rows * x.rows, pack_cols = 4 * x.cols;  // per packing task (AVX-512: 4 panels)
  const int64_t a_tasks = (m + pack_rows - 1) / pack_rows, b_tasks = (n + pack_cols - 1) / pack_cols;
  int64_t tm, tn;
  tile_shape(x, m, n, tm, tn);
  const int64_t mt = (m + tm - 1) / tm, nt = (n + tn - 1) / tn;
  const bool finish = ep.bias || ep.gelu_out || ep.dgelu_pre;
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < a_tasks; ++t)
      x.pack_a(ta, a, lda, m, k, t * pack_rows, std::min(pack_rows, m - t * pack_rows), pa, a_row_sums);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < b_tasks; ++t)
      x.pack_b(tb, b, ldb, k, n, t * pack_cols, std::min(pack_cols, n - t * pack_cols), pb);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < mt * nt; ++tile) {
      const int64_t i0 = (tile / nt) * tm, j0 = (tile % nt) * tn;
      const int64_t rows = std::min(tm, m - i0), cols = std::min(tn, n - j0);
      x.gemm_packed(m, n, k, alpha, pa, pb, beta, c, n, i0, rows, j0, cols);
      if (finish) finish_tile(x, c, n, i0, rows, j0, cols, ep);
    }
  }
}

}  // namespace mt::cpu
