// Dispatch and argument checks for gemm.h.
#include "kernels/gemm.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha, float beta,
          const Tensor* bias, Stream s) {
  using namespace detail;
  check_float("gemm", "a", a);
  check_float("gemm", "b", b);
  check_float("gemm", "c", c);
  MT_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "gemm: a {}, b {}, c {} must be 2-D", a.str(), b.str(),
           c.str());
  MT_CHECK(b.dtype() == a.dtype(), "gemm: a {} and b {} must share a dtype", a.str(), b.str());
  MT_CHECK(c.dtype() == DType::F32 || c.dtype() == a.dtype(), "gemm: c {} must be fp32 or a's dtype", c.str());
  const int64_t m = trans_a ? a.size(1) : a.size(0), k = trans_a ? a.size(0) : a.size(1);
  const int64_t kb = trans_b ? b.size(1) : b.size(0), n = trans_b ? b.size(0) : b.size(1);
  MT_CHECK(k == kb, "gemm: inner dimensions differ: op(a) {}x{}, op(b) {}x{}", m, k, kb, n);
  check_shape("gemm", "c", c, {m, n});
  if (bias) {
    check_float("gemm", "bias", *bias);
    check_numel("gemm", "bias", *bias, n);
    MT_CHECK(bias->dtype() == DType::F32 || bias->dtype() == a.dtype(), "gemm: bias {} must be fp32 or a's dtype",
             bias->str());
  }
  if (on_cuda("gemm", {&a, &b, &c, bias})) MT_CUDA_CALL(gemm(a, trans_a, b, trans_b, c, alpha, beta, bias, s));
  cpu::gemm(a, trans_a, b, trans_b, c, alpha, beta, bias);
}

void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum, Stream s) {
  using namespace detail;
  check_float("bias_grad_accumulate", "dy", dy);
  check_dtype("bias_grad_accumulate", "db_accum", db_accum, DType::F32);
  MT_CHECK(dy.dim() >= 1, "bias_grad_accumulate: dy {} needs a last dimension", dy.str());
  check_numel("bias_grad_accumulate", "db_accum", db_accum, dy.size(-1));
  if (on_cuda("bias_grad_accumulate", {&dy, &db_accum})) MT_CUDA_CALL(bias_grad_accumulate(dy, db_accum, s));
  cpu::bias_grad_accumulate(dy, db_accum);
}

}  // namespace mt
