// The AVX-512 GEMM's OpenMP driver (gemm_tiles.h). Three work-shared loops in one parallel
// region: pack op(A) in chunks of rows, pack op(B) in chunks of columns, then tiles of C.
// Packing each operand once instead of once per tile saved ~15% of the GEMM time at the
// model's shapes (each tile used to re-read its slices from L3). Tiles are up to 252 x 512:
// the packed kc x 512 block of B stays in L2 while a tile's row panels stream past it, and the
// tile (~0.5 MiB) is still in L2 for its epilogue.
#include "kernels/cpu/gemm_tiles.h"

#include <algorithm>

#include "core/tensor.h"
#include "kernels/cpu/gelu_avx512.h"
#include "kernels/cpu/sgemm_avx512.h"

namespace mt::cpu {
namespace {

// Tiles up to 252 x 512, halved (the longer side first, keeping multiples of 14 rows and 32
// columns) while C has fewer than 16 tiles, so small products still spread over threads.
void tile_shape(int64_t m, int64_t n, int64_t& tm, int64_t& tn) {
  using avx512::kCols;
  using avx512::kRows;
  tm = 18 * kRows;
  tn = 16 * kCols;
  auto tiles = [&] { return ((m + tm - 1) / tm) * ((n + tn - 1) / tn); };
  while (tiles() < 16 && (tm > 2 * kRows || tn > 2 * kCols)) {
    if (tm >= tn / 2 && tm > 2 * kRows) {
      tm = (tm / kRows + 1) / 2 * kRows;
    } else {
      tn = (tn / kCols + 1) / 2 * kCols;
    }
  }
}

void finish_tile(float* c, int64_t n, int64_t i0, int64_t rows, int64_t j0, int64_t cols, const TileEpilogue& ep) {
  for (int64_t i = i0; i < i0 + rows; ++i) {
    float* ci = c + i * n + j0;
    if (ep.bias) {
      const float* bias = ep.bias + j0;
      for (int64_t j = 0; j < cols; ++j) ci[j] += bias[j];
    }
    if (ep.gelu_out) avx512::gelu_forward(ci, ep.gelu_out + i * n + j0, cols);
    if (ep.dgelu_pre) avx512::gelu_backward(ci, ep.dgelu_pre + i * n + j0, ci, cols);
  }
}

}  // namespace

void parallel_sgemm_avx512(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                           const float* b, int64_t ldb, float beta, float* c, const TileEpilogue& ep,
                           float* a_row_sums) {
  namespace x = avx512;
  Tensor pa_t = Tensor::empty({x::packed_a_floats(m, k)}, DType::F32);
  Tensor pb_t = Tensor::empty({x::packed_b_floats(k, n)}, DType::F32);
  float *pa = pa_t.data<float>(), *pb = pb_t.data<float>();
  constexpr int64_t kPackRows = 4 * x::kRows, kPackCols = 4 * x::kCols;  // per packing task
  const int64_t a_tasks = (m + kPackRows - 1) / kPackRows, b_tasks = (n + kPackCols - 1) / kPackCols;
  int64_t tm, tn;
  tile_shape(m, n, tm, tn);
  const int64_t mt = (m + tm - 1) / tm, nt = (n + tn - 1) / tn;
  const bool finish = ep.bias || ep.gelu_out || ep.dgelu_pre;
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < a_tasks; ++t)
      x::pack_a(ta, a, lda, m, k, t * kPackRows, std::min(kPackRows, m - t * kPackRows), pa, a_row_sums);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < b_tasks; ++t)
      x::pack_b(tb, b, ldb, k, n, t * kPackCols, std::min(kPackCols, n - t * kPackCols), pb);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < mt * nt; ++tile) {
      const int64_t i0 = (tile / nt) * tm, j0 = (tile % nt) * tn;
      const int64_t rows = std::min(tm, m - i0), cols = std::min(tn, n - j0);
      x::gemm_packed(m, n, k, alpha, pa, pb, beta, c, n, i0, rows, j0, cols);
      if (finish) finish_tile(c, n, i0, rows, j0, cols, ep);
    }
  }
}

}  // namespace mt::cpu
