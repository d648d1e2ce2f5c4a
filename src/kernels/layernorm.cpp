// Dispatch and argument checks for layernorm.h.
#include "kernels/layernorm.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

// x, y (or dy, dx) [.., C] of one float dtype; w (and b): C elements, x's dtype or fp32; stats fp32,
// one per row.
void check_common(const char* op, const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& mean,
                  const Tensor& rstd) {
  using namespace detail;
  check_float(op, "x", x);
  check_float(op, "y/dx", y);
  check_float(op, "w", w);
  MT_CHECK(x.dim() >= 1 && x.size(-1) > 0, "{}: x {} needs a non-empty last dimension", op, x.str());
  MT_CHECK(y.dtype() == x.dtype(), "{}: {} must have x's dtype {}", op, y.str(), x.str());
  check_shape(op, "y/dx", y, x.shape());
  const int64_t C = x.size(-1), N = x.numel() / C;
  check_numel(op, "w", w, C);
  MT_CHECK(w.dtype() == x.dtype() || w.dtype() == DType::F32, "{}: w {} must be fp32 or x's dtype", op, w.str());
  check_dtype(op, "mean", mean, DType::F32);
  check_dtype(op, "rstd", rstd, DType::F32);
  check_numel(op, "mean", mean, N);
  check_numel(op, "rstd", rstd, N);
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd, Stream s) {
  using namespace detail;
  check_common("layernorm_forward", x, y, w, mean, rstd);
  check_float("layernorm_forward", "b", b);
  check_numel("layernorm_forward", "b", b, w.numel());
  MT_CHECK(b.dtype() == w.dtype(), "layernorm_forward: b {} must have w's dtype", b.str());
  if (on_cuda("layernorm_forward", {&x, &w, &b, &y, &mean, &rstd}))
    MT_CUDA_CALL(layernorm_forward(x, w, b, eps, y, mean, rstd, s));
  cpu::layernorm_forward(x, w, b, eps, y, mean, rstd);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum, Stream s) {
  using namespace detail;
  check_common("layernorm_backward", x, dx, w, mean, rstd);
  check_float("layernorm_backward", "dy", dy);
  MT_CHECK(dy.dtype() == x.dtype(), "layernorm_backward: dy {} must have x's dtype", dy.str());
  check_shape("layernorm_backward", "dy", dy, x.shape());
  check_dtype("layernorm_backward", "dw_accum", dw_accum, DType::F32);
  check_dtype("layernorm_backward", "db_accum", db_accum, DType::F32);
  check_numel("layernorm_backward", "dw_accum", dw_accum, w.numel());
  check_numel("layernorm_backward", "db_accum", db_accum, w.numel());
  if (on_cuda("layernorm_backward", {&dy, &x, &w, &mean, &rstd, &dx, &dw_accum, &db_accum}))
    MT_CUDA_CALL(layernorm_backward(dy, x, w, mean, rstd, dx, dw_accum, db_accum, s));
  cpu::layernorm_backward(dy, x, w, mean, rstd, dx, dw_accum, db_accum);
}

}  // namespace mt
