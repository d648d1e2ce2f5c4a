// Dispatch and argument checks for grouped_gemm.h. The CPU path (and the CUDA one where no
// grouped kernel applies) is one gemm per group on row slices.
#include "kernels/grouped_gemm.h"

#include <functional>

#include "kernels/dispatch.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace mt {
namespace {

using namespace detail;

int64_t check_groups(const char* op, const Tensor& w, const std::vector<int64_t>& counts) {
  check_tensor(op, "w", w);
  MT_CHECK(w.dim() == 3 && w.size(0) == int64_t(counts.size()), "{}: w {} must be [G, N, K] with G = {} groups", op,
           w.str(), counts.size());
  int64_t m = 0;
  for (int64_t c : counts) {
    MT_CHECK(c >= 0, "{}: negative group size {}", op, c);
    m += c;
  }
  return m;
}
void check_2d(const char* op, const char* name, const Tensor& t, int64_t rows, int64_t cols) {
  check_float(op, name, t);
  check_shape(op, name, t, {rows, cols});
}

// The per-group path: fn(g, first row, rows) for every group, its GEMMs untimed (the rows per
// group change every call: see GemmHeuristicOnly).
void for_each_group(const std::vector<int64_t>& counts, const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const GemmHeuristicOnly untimed;
  int64_t row = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    fn(int64_t(g), row, counts[g]);
    row += counts[g];
  }
}

}  // namespace

void grouped_gemm_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& y,
                          Stream s) {
  const char* op = "grouped_gemm_forward";
  const int64_t M = check_groups(op, w, counts), N = w.size(1), K = w.size(2);
  check_2d(op, "x", x, M, K);
  check_2d(op, "y", y, M, N);
#ifdef MT_WITH_CUDA
  if (on_cuda(op, {&x, &w, &y}) && cuda::grouped_gemm_forward(x, w, counts, y, s)) return;
#endif
  for_each_group(counts, [&](int64_t g, int64_t row, int64_t rows) {
    if (rows > 0) gemm(x.narrow0(row, rows), false, w.narrow0(g, 1).view({N, K}), true, y.narrow0(row, rows), 1.0f, 0.0f,
                       nullptr, s);
  });
}

void grouped_gemm_dgrad(const Tensor& dy, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& dx,
                        Stream s) {
  const char* op = "grouped_gemm_dgrad";
  const int64_t M = check_groups(op, w, counts), N = w.size(1), K = w.size(2);
  check_2d(op, "dy", dy, M, N);
  check_2d(op, "dx", dx, M, K);
#ifdef MT_WITH_CUDA
  if (on_cuda(op, {&dy, &w, &dx}) && cuda::grouped_gemm_dgrad(dy, w, counts, dx, s)) return;
#endif
  for_each_group(counts, [&](int64_t g, int64_t row, int64_t rows) {
    if (rows > 0) gemm(dy.narrow0(row, rows), false, w.narrow0(g, 1).view({N, K}), false, dx.narrow0(row, rows), 1.0f,
                       0.0f, nullptr, s);
  });
}

void grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const std::vector<int64_t>& counts, const Tensor& dw,
                        float beta, Stream s) {
  const char* op = "grouped_gemm_wgrad";
  const int64_t M = check_groups(op, dw, counts), N = dw.size(1), K = dw.size(2);
  check_dtype(op, "dw", dw, DType::F32);
  check_2d(op, "dy", dy, M, N);
  check_2d(op, "x", x, M, K);
#ifdef MT_WITH_CUDA
  if (on_cuda(op, {&dy, &x, &dw}) && cuda::grouped_gemm_wgrad(dy, x, counts, dw, beta, s)) return;
#endif
  for_each_group(counts, [&](int64_t g, int64_t row, int64_t rows) {
    Tensor dwg = dw.narrow0(g, 1).view({N, K});
    if (rows > 0)
      gemm(dy.narrow0(row, rows), true, x.narrow0(row, rows), false, dwg, 1.0f, beta, nullptr, s);
    else if (beta == 0.0f)
      fill(dwg, 0.0f, s);  // overwrites, NaN included
    else if (beta != 1.0f)
      scale_(dwg, beta, s);
  });
}

}  // namespace mt
