// Dispatch and argument checks for rmsnorm.h.
#include "kernels/rmsnorm.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

void check_grads(const char* op, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dw_accum) {
  using namespace detail;
  check_float(op, "dy", dy);
  check_like(op, "dy", dy, x);
  check_dtype(op, "dw_accum", dw_accum, DType::F32);
  check_numel(op, "dw_accum", dw_accum, w.numel());
}

// qkv [B, T, G, Q/G + 2, D] with G = n_query_groups and at least one query head per group; q_w,
// k_w: D elements of one dtype (fp32 or qkv's); rstd fp32, one per q and k head.
void check_qk(const char* op, const Tensor& qkv, int n_query_groups, const Tensor& q_w, const Tensor& k_w,
              const Tensor& rstd) {
  using namespace detail;
  check_float(op, "qkv", qkv);
  check_float(op, "q_w", q_w);
  check_float(op, "k_w", k_w);
  MT_CHECK(qkv.dim() == 5, "{}: qkv must be [B, T, G, Q/G + 2, D], got {}", op, qkv.str());
  MT_CHECK(n_query_groups > 0 && qkv.size(2) == n_query_groups, "{}: qkv {} must have n_query_groups = {} groups",
           op, qkv.str(), n_query_groups);
  MT_CHECK(qkv.size(3) >= 3 && qkv.size(4) > 0, "{}: qkv {} needs a query, key and value head of D > 0 per group",
           op, qkv.str());
  const int64_t D = qkv.size(4), heads = qkv.numel() / D, per_group = qkv.size(3);
  check_numel(op, "q_w", q_w, D);
  check_numel(op, "k_w", k_w, D);
  MT_CHECK(q_w.dtype() == qkv.dtype() || q_w.dtype() == DType::F32, "{}: q_w {} must be fp32 or qkv's dtype", op,
           q_w.str());
  MT_CHECK(k_w.dtype() == q_w.dtype(), "{}: k_w {} must have q_w's dtype", op, k_w.str());
  check_dtype(op, "rstd", rstd, DType::F32);
  check_numel(op, "rstd", rstd, heads / per_group * (per_group - 1));
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd, Stream s) {
  using namespace detail;
  detail::check_row_norm("rmsnorm_forward", x, y, w, rstd);
  if (on_cuda("rmsnorm_forward", {&x, &w, &y, &rstd})) MT_CUDA_CALL(rmsnorm_forward(x, w, eps, y, rstd, s));
  cpu::rmsnorm_forward(x, w, eps, y, rstd);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                      const Tensor& dw_accum, Stream s) {
  using namespace detail;
  detail::check_row_norm("rmsnorm_backward", x, dx, w, rstd);
  check_grads("rmsnorm_backward", dy, x, w, dw_accum);
  if (on_cuda("rmsnorm_backward", {&dy, &x, &w, &rstd, &dx, &dw_accum}))
    MT_CUDA_CALL(rmsnorm_backward(dy, x, w, rstd, dx, dw_accum, s));
  cpu::rmsnorm_backward(dy, x, w, rstd, dx, dw_accum);
}

void add_rmsnorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& sum,
                         const Tensor& y, const Tensor& rstd, Stream s) {
  using namespace detail;
  detail::check_row_norm("add_rmsnorm_forward", x, y, w, rstd);
  detail::check_like("add_rmsnorm_forward", "r", r, x);
  detail::check_like("add_rmsnorm_forward", "sum", sum, x);
  if (on_cuda("add_rmsnorm_forward", {&x, &r, &w, &sum, &y, &rstd}))
    MT_CUDA_CALL(add_rmsnorm_forward(x, r, w, eps, sum, y, rstd, s));
  cpu::add_rmsnorm_forward(x, r, w, eps, sum, y, rstd);
}

void rmsnorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dres,
                          const Tensor& dx, const Tensor& dw_accum, Stream s) {
  using namespace detail;
  detail::check_row_norm("rmsnorm_backward_add", x, dx, w, rstd);
  check_grads("rmsnorm_backward_add", dy, x, w, dw_accum);
  detail::check_like("rmsnorm_backward_add", "dres", dres, x);
  MT_CHECK(dx.raw() != dres.raw(), "rmsnorm_backward_add: dx must not alias dres");
  if (on_cuda("rmsnorm_backward_add", {&dy, &x, &w, &rstd, &dres, &dx, &dw_accum}))
    MT_CUDA_CALL(rmsnorm_backward_add(dy, x, w, rstd, dres, dx, dw_accum, s));
  cpu::rmsnorm_backward_add(dy, x, w, rstd, dres, dx, dw_accum);
}

void qk_rmsnorm_forward(const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w, int n_query_groups, float eps,
                        const Tensor& qkv_out, const Tensor& rstd, Stream s) {
  using namespace detail;
  check_qk("qk_rmsnorm_forward", qkv_in, n_query_groups, q_w, k_w, rstd);
  detail::check_like("qk_rmsnorm_forward", "qkv_out", qkv_out, qkv_in);
  MT_CHECK(qkv_out.raw() != qkv_in.raw(), "qk_rmsnorm_forward: qkv_out must not alias qkv_in (backward needs it)");
  if (on_cuda("qk_rmsnorm_forward", {&qkv_in, &q_w, &k_w, &qkv_out, &rstd}))
    MT_CUDA_CALL(qk_rmsnorm_forward(qkv_in, q_w, k_w, n_query_groups, eps, qkv_out, rstd, s));
  cpu::qk_rmsnorm_forward(qkv_in, q_w, k_w, n_query_groups, eps, qkv_out, rstd);
}

// dqkv_in may alias dqkv_out (both backends finish the weight gradients before writing dqkv_in,
// and each head's gradient is written only by whoever read that head).
void qk_rmsnorm_backward(const Tensor& dqkv_out, const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w,
                         int n_query_groups, const Tensor& rstd, const Tensor& dqkv_in, const Tensor& dq_w_accum,
                         const Tensor& dk_w_accum, Stream s) {
  using namespace detail;
  const char* op = "qk_rmsnorm_backward";
  check_qk(op, qkv_in, n_query_groups, q_w, k_w, rstd);
  check_float(op, "dqkv_out", dqkv_out);
  detail::check_like(op, "dqkv_out", dqkv_out, qkv_in);
  check_float(op, "dqkv_in", dqkv_in);
  detail::check_like(op, "dqkv_in", dqkv_in, qkv_in);
  check_dtype(op, "dq_w_accum", dq_w_accum, DType::F32);
  check_dtype(op, "dk_w_accum", dk_w_accum, DType::F32);
  check_numel(op, "dq_w_accum", dq_w_accum, q_w.numel());
  check_numel(op, "dk_w_accum", dk_w_accum, k_w.numel());
  MT_CHECK(dqkv_in.raw() != qkv_in.raw(), "{}: dqkv_in must not alias qkv_in", op);
  if (on_cuda(op, {&dqkv_out, &qkv_in, &q_w, &k_w, &rstd, &dqkv_in, &dq_w_accum, &dk_w_accum}))
    MT_CUDA_CALL(qk_rmsnorm_backward(dqkv_out, qkv_in, q_w, k_w, n_query_groups, rstd, dqkv_in, dq_w_accum,
                                     dk_w_accum, s));
  cpu::qk_rmsnorm_backward(dqkv_out, qkv_in, q_w, k_w, n_query_groups, rstd, dqkv_in, dq_w_accum, dk_w_accum);
}

}  // namespace mt
