// Dispatch and argument checks for gemm.h.
#include "kernels/gemm.h"

#include <atomic>

#include "core/env.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

namespace {

std::atomic<bool>& autotune_setting() {
  static std::atomic<bool> on = env_switch("MT_GEMM_AUTOTUNE", true);
  return on;
}

thread_local int t_heuristic_only = 0;  // GemmHeuristicOnly scopes open on this thread

// Checks gemm's arguments (bias may be null) and returns k.
int64_t check_gemm(const char* op, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                   const Tensor* bias) {
  using namespace detail;
  check_float(op, "a", a);
  check_float(op, "b", b);
  check_float(op, "c", c);
  MT_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "{}: a {}, b {}, c {} must be 2-D", op, a.str(), b.str(),
           c.str());
  MT_CHECK(b.dtype() == a.dtype(), "{}: a {} and b {} must share a dtype", op, a.str(), b.str());
  MT_CHECK(c.dtype() == DType::F32 || c.dtype() == a.dtype(), "{}: c {} must be fp32 or a's dtype", op, c.str());
  const int64_t m = trans_a ? a.size(1) : a.size(0), k = trans_a ? a.size(0) : a.size(1);
  const int64_t kb = trans_b ? b.size(1) : b.size(0), n = trans_b ? b.size(0) : b.size(1);
  MT_CHECK(k == kb, "{}: inner dimensions differ: op(a) {}x{}, op(b) {}x{}", op, m, k, kb, n);
  check_shape(op, "c", c, {m, n});
  if (bias) {
    check_float(op, "bias", *bias);
    check_numel(op, "bias", *bias, n);
    MT_CHECK(bias->dtype() == DType::F32 || bias->dtype() == a.dtype(), "{}: bias {} must be fp32 or a's dtype", op,
             bias->str());
  }
  return k;
}

// The GeLU companions of a fused GEMM: `other` (pre or dpre) like `c`, in A's dtype, distinct.
void check_gelu_pair(const char* op, const char* c_name, const Tensor& c, const char* other_name, const Tensor& other,
                     const Tensor& a) {
  using namespace detail;
  MT_CHECK(c.dtype() == a.dtype(), "{}: {} {} must have a's dtype ({})", op, c_name, c.str(), dtype_name(a.dtype()));
  check_dtype(op, other_name, other, a.dtype());
  check_shape(op, other_name, other, c.shape());
  MT_CHECK(other.raw() != c.raw() || c.numel() == 0, "{}: {} and {} must not share memory", op, c_name, other_name);
}

}  // namespace

std::vector<int64_t> cpu_gemm_workspace(int64_t m, int64_t n, int64_t k, DType in, DType out) {
  return cpu::gemm_workspace(m, n, k, in, out);
}

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha, float beta,
          const Tensor* bias, Stream s) {
  check_gemm("gemm", a, trans_a, b, trans_b, c, bias);
  if (detail::on_cuda("gemm", {&a, &b, &c, bias})) MT_CUDA_CALL(gemm(a, trans_a, b, trans_b, c, alpha, beta, bias, s));
  cpu::gemm(a, trans_a, b, trans_b, c, alpha, beta, bias);
}

bool gemm_bias_gelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor* bias,
                    const Tensor& pre, const Tensor& y, Stream s) {
  check_gemm("gemm_bias_gelu", a, trans_a, b, trans_b, pre, bias);
  check_gelu_pair("gemm_bias_gelu", "pre", pre, "y", y, a);
  if (detail::on_cuda("gemm_bias_gelu", {&a, &b, &pre, &y, bias}))
    MT_CUDA_CALL(gemm_bias_gelu(a, trans_a, b, trans_b, bias, pre, y, s));
  cpu::gemm_bias_gelu(a, trans_a, b, trans_b, bias, pre, y);
  return false;
}

bool gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre, const Tensor& dpre,
                const Tensor* db_accum, Stream s) {
  check_gemm("gemm_dgelu", a, trans_a, b, trans_b, dpre, nullptr);
  check_gelu_pair("gemm_dgelu", "dpre", dpre, "pre", pre, a);
  if (db_accum) {
    detail::check_dtype("gemm_dgelu", "db_accum", *db_accum, DType::F32);
    detail::check_numel("gemm_dgelu", "db_accum", *db_accum, dpre.size(1));
  }
  if (detail::on_cuda("gemm_dgelu", {&a, &b, &pre, &dpre, db_accum}))
    MT_CUDA_CALL(gemm_dgelu(a, trans_a, b, trans_b, pre, dpre, db_accum, s));
  cpu::gemm_dgelu(a, trans_a, b, trans_b, pre, dpre, db_accum);
  return false;
}

bool gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum, float dw_beta,
                      Stream s) {
  using namespace detail;
  check_gemm("gemm_wgrad_bgrad", dy, true, x, false, dw_accum, nullptr);
  check_dtype("gemm_wgrad_bgrad", "dw_accum", dw_accum, DType::F32);
  check_dtype("gemm_wgrad_bgrad", "db_accum", db_accum, DType::F32);
  check_numel("gemm_wgrad_bgrad", "db_accum", db_accum, dy.size(1));
  if (on_cuda("gemm_wgrad_bgrad", {&dy, &x, &dw_accum, &db_accum}))
    MT_CUDA_CALL(gemm_wgrad_bgrad(dy, x, dw_accum, db_accum, dw_beta, s));
  cpu::gemm_wgrad_bgrad(dy, x, dw_accum, db_accum, dw_beta);
  return false;
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

void set_gemm_autotune(bool on) { autotune_setting().store(on); }
bool gemm_autotune() { return autotune_setting().load() && t_heuristic_only == 0; }

GemmHeuristicOnly::GemmHeuristicOnly() { ++t_heuristic_only; }
GemmHeuristicOnly::~GemmHeuristicOnly() { --t_heuristic_only; }

}  // namespace mt
