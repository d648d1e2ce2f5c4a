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

// A tensor like x (same dtype and shape).
void check_like_x(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  detail::check_dtype(op, name, t, x.dtype());
  detail::check_shape(op, name, t, x.shape());
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
  check_like_x("add_layernorm_forward", "r", r, x);
  check_like_x("add_layernorm_forward", "sum", sum, x);
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
  check_like_x("layernorm_backward_add", "dres", dres, x);
  MT_CHECK(dx.raw() != dres.raw(), "layernorm_backward_add: dx must not alias dres");
  if (on_cuda("layernorm_backward_add", {&dy, &x, &w, &mean, &rstd, &dres, &dx, &dw_accum, &db_accum}))
    MT_CUDA_CALL(layernorm_backward_add(dy, x, w, mean, rstd, dres, dx, dw_accum, db_accum, s));
  cpu::layernorm_backward_add(dy, x, w, mean, rstd, dres, dx, dw_accum, db_accum);
}

}  // namespace mt
