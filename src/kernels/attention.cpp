// Dispatch and argument checks for attention.h.
#include "kernels/attention.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/env.h"
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

std::atomic<AttentionBackend>& backend_setting() {
  static std::atomic<AttentionBackend> b = [] {
    const char* e = std::getenv("MT_ATTENTION_BACKEND");
    if (!e || !*e || std::strcmp(e, "auto") == 0) return AttentionBackend::Auto;
    if (std::strcmp(e, "cudnn") == 0) return AttentionBackend::Cudnn;
    if (std::strcmp(e, "native") == 0) return AttentionBackend::Native;
    MT_USER_ERROR("MT_ATTENTION_BACKEND={}: expected auto, cudnn or native", e);
  }();
  return b;
}

std::atomic<bool>& deterministic_setting() {
  static std::atomic<bool> d = env_switch("MT_ATTENTION_DETERMINISTIC", false);
  return d;
}

std::atomic<bool>& autotune_setting() {
  static std::atomic<bool> on = env_switch("MT_ATTENTION_AUTOTUNE", true);
  return on;
}

#if defined(MT_WITH_CUDA) && defined(MT_WITH_CUDNN)
// Runs cuDNN when the backend setting allows it and cuDNN can run this case; false: use the native kernel.
template <class Fn>
bool try_cudnn(const char* op, const Tensor& qkv, const AttentionConfig& cfg, Fn&& run) {
  const AttentionBackend b = attention_backend();
  if (b == AttentionBackend::Native) return false;
  std::string why;
  if (run(&why)) return true;
  if (b == AttentionBackend::Cudnn)
    MT_USER_ERROR("{}: MT_ATTENTION_BACKEND=cudnn, but cuDNN cannot run qkv {} (heads {}, head dim {}, dropout {}): {}",
                  op, qkv.str(), cfg.n_heads, cfg.head_dim, cfg.dropout_p, why);
  return false;
}
#endif

}  // namespace

void set_attention_backend(AttentionBackend b) { backend_setting().store(b); }
AttentionBackend attention_backend() { return backend_setting().load(); }
void set_attention_deterministic(bool on) { deterministic_setting().store(on); }
void set_attention_autotune(bool on) { autotune_setting().store(on); }
bool attention_autotune() { return autotune_setting().load(); }
bool attention_deterministic() { return deterministic_setting().load(); }
bool attention_has_cudnn() {
#if defined(MT_WITH_CUDA) && defined(MT_WITH_CUDNN)
  return true;
#else
  return false;
#endif
}

void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg, Stream s) {
  check_attention("attention_forward", qkv, out, lse, cfg);
  if (detail::on_cuda("attention_forward", {&qkv, &out, &lse})) {
#if defined(MT_WITH_CUDA) && defined(MT_WITH_CUDNN)
    if (try_cudnn("attention_forward", qkv, cfg,
                  [&](std::string* why) { return cuda::cudnn_attention_forward(qkv, out, lse, cfg, s, why); }))
      return;
#endif
    MT_CUDA_CALL(attention_forward(qkv, out, lse, cfg, s));
  }
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
  if (on_cuda("attention_backward", {&dout, &qkv, &out, &lse, &dqkv})) {
#if defined(MT_WITH_CUDA) && defined(MT_WITH_CUDNN)
    if (try_cudnn("attention_backward", qkv, cfg, [&](std::string* why) {
          return cuda::cudnn_attention_backward(dout, qkv, out, lse, dqkv, cfg, s, why);
        }))
      return;
#endif
    MT_CUDA_CALL(attention_backward(dout, qkv, out, lse, dqkv, cfg, s));
  }
  cpu::attention_backward(dout, qkv, out, lse, dqkv, cfg);
}

}  // namespace mt
