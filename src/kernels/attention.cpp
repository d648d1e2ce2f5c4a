// Dispatch and argument checks for attention.h.
#include "kernels/attention.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

// qkv [B, T, H, 3, D], out [B, T, H, D] of one float dtype; lse fp32 [B, H, T].
void check_attention(const char* op, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                     const AttentionConfig& cfg) {
  using namespace detail;
  check_float(op, "qkv", qkv);
  check_float(op, "out", out);
  check_dtype(op, "lse", lse, DType::F32);
  MT_CHECK(cfg.n_heads > 0 && cfg.head_dim > 0, "{}: n_heads {} and head_dim {} must be positive", op, cfg.n_heads,
           cfg.head_dim);
  MT_CHECK(cfg.dropout_p >= 0.0f && cfg.dropout_p < 1.0f, "{}: dropout_p = {} must be in [0, 1)", op, cfg.dropout_p);
  MT_CHECK(qkv.dim() == 5, "{}: qkv {} must be [B, T, H, 3, D]", op, qkv.str());
  const int64_t B = qkv.size(0), T = qkv.size(1), H = cfg.n_heads, D = cfg.head_dim;
  check_shape(op, "qkv", qkv, {B, T, H, 3, D});
  check_shape(op, "out", out, {B, T, H, D});
  MT_CHECK(out.dtype() == qkv.dtype(), "{}: out {} must have qkv's dtype", op, out.str());
  check_shape(op, "lse", lse, {B, H, T});
}

}  // namespace

void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg, Stream s) {
  check_attention("attention_forward", qkv, out, lse, cfg);
  if (detail::on_cuda("attention_forward", {&qkv, &out, &lse})) MT_CUDA_CALL(attention_forward(qkv, out, lse, cfg, s));
  cpu::attention_forward(qkv, out, lse, cfg);
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& dqkv,
                        const AttentionConfig& cfg, Stream s) {
  using namespace detail;
  check_attention("attention_backward", qkv, out, lse, cfg);
  check_float("attention_backward", "dout", dout);
  check_float("attention_backward", "dqkv", dqkv);
  check_shape("attention_backward", "dout", dout, out.shape());
  check_shape("attention_backward", "dqkv", dqkv, qkv.shape());
  MT_CHECK(dout.dtype() == qkv.dtype() && dqkv.dtype() == qkv.dtype(),
           "attention_backward: dout {} and dqkv {} must have qkv's dtype", dout.str(), dqkv.str());
  if (on_cuda("attention_backward", {&dout, &qkv, &out, &lse, &dqkv}))
    MT_CUDA_CALL(attention_backward(dout, qkv, out, lse, dqkv, cfg, s));
  cpu::attention_backward(dout, qkv, out, lse, dqkv, cfg);
}

}  // namespace mt
