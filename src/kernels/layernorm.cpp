// Dispatch and argument checks for layernorm.h.
#include "kernels/layernorm.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

// check_row_norm's arguments, and LayerNorm's mean: fp32, one per row.
void check_common(const char* op, const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& mean,
                  const Tensor& rstd) {
  detail::check_row_norm(op, x, y, w, rstd);
  detail::check_dtype(op, "mean", mean, DType::F32);
  detail::check_numel(op, "mean", mean, rstd.numel());
}

void check_bias(const char* op, const Tensor& b, const Tensor& w) {
  using namespace detail;
  check_float(op, "b", b);
  check_numel(op, "b", b, w.numel());
  MT_CHECK(b.dtype() == w.dtype(), "{}: b {} must have w's dtype", op, b.str());
}

void check_grads(const char* op, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dw_accum,
                 const Tensor& db_accum) {
  using namespace detail;
  check_float(op, "dy", dy);
  MT_CHECK(dy.dtype() == x.dtype(), "{}: dy {} must have x's dtype", op, dy.str());
  check_shape(op, "dy", dy, x.shape());
  check_dtype(op, "dw_accum", dw_accum, DType::F32);
  check_dtype(op, "db_accum", db_accum, DType::F32);
  check_numel(op, "dw_accum", dw_accum, w.numel());
  check_numel(op, "db_accum", db_accum, w.numel());
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd, Stream s) {
  using namespace detail;
  check_common("layernorm_forward", x, y, w, mean, rstd);
  check_bias("layernorm_forward", b, w);
  if (on_cuda("layernorm_forward", {&x, &w, &b, &y, &mean, &rstd}))
    MT_CUDA_CALL(layernorm_forward(x, w, b, eps, y, mean, rstd, s));
  cpu::layernorm_forward(x, w, b, eps, y, mean, rstd);
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum, Stream s) {
  using namespace detail;
  check_common("layernorm_backward", x, dx, w, mean, rstd);
  check_grads("layernorm_backward", dy, x, w, dw_accum, db_accum);
  if (on_cuda("layernorm_backward", {&dy, &x, &w, &mean, &rstd, &dx, &dw_accum, &db_accum}))
    MT_CUDA_CALL(layernorm_backward(dy, x, w, mean, rstd, dx, dw_accum, db_accum, s));
  cpu::layernorm_backward(dy, x, w, mean, rstd, dx, dw_accum, db_accum);
}

void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd, Stream s) {
  using namespace detail;
  check_common("add_layernorm_forward", x, y, w, mean, rstd);
  check_bias("add_layernorm_forward", b, w);
  detail::check_like("add_layernorm_forward", "r", r, x);
  detail::check_like("add_layernorm_forward", "sum", sum, x);
  if (on_cuda("add_layernorm_forward", {&x, &r, &w, &b, &sum, &y, &mean, &rstd}))
    MT_CUDA_CALL(add_layernorm_forward(x, r, w, b, eps, sum, y, mean, rstd, s));
  cpu::add_layernorm_forward(x, r, w, b, eps, sum, y, mean, rstd);
}

void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                            const Tensor& dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum,
                            Stream s) {
  using namespace detail;
  check_common("layernorm_backward_add", x, dx, w, mean, rstd);
  check_grads("layernorm_backward_add", dy, x, w, dw_accum, db_accum);
  detail::check_like("layernorm_backward_add", "dres", dres, x);
  MT_CHECK(dx.raw() != dres.raw(), "layernorm_backward_add: dx must not alias dres");
  if (on_cuda("layernorm_backward_add", {&dy, &x, &w, &mean, &rstd, &dres, &dx, &dw_accum, &db_accum}))
    MT_CUDA_CALL(layernorm_backward_add(dy, x, w, mean, rstd, dres, dx, dw_accum, db_accum, s));
  cpu::layernorm_backward_add(dy, x, w, mean, rstd, dres, dx, dw_accum, db_accum);
}

}  // namespace mt
