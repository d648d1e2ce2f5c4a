// Dispatch and argument checks for attention.h.
#include "kernels/attention.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/env.h"
#include "kernels/attention_checks.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

void detail::check_attention_config(const char* op, const AttentionConfig& cfg) {
  MT_CHECK(cfg.n_heads > 0 && cfg.head_dim > 0, "{}: n_heads {} and head_dim {} must be positive", op, cfg.n_heads,
           cfg.head_dim);
  MT_CHECK(cfg.n_query_groups >= 0 && cfg.n_query_groups <= cfg.n_heads && cfg.n_heads % cfg.groups() == 0,
           "{}: n_query_groups {} must divide n_heads {} (0: n_heads)", op, cfg.n_query_groups, cfg.n_heads);
  MT_CHECK(cfg.dropout_p >= 0.0f && cfg.dropout_p < 1.0f, "{}: dropout_p = {} must be in [0, 1)", op, cfg.dropout_p);
  MT_CHECK(cfg.batch_offset >= 0 && cfg.head_offset >= 0 && cfg.total_heads >= 0 &&
               cfg.head_offset + cfg.n_heads <= cfg.mask_heads(),
           "{}: the dropout mask's heads [{}, {}) must lie in total_heads {} (0: n_heads), batch_offset {} >= 0", op,
           cfg.head_offset, cfg.head_offset + cfg.n_heads, cfg.total_heads, cfg.batch_offset);
}

namespace {

// qkv [B, T, G, H/G + 2, D] (G = H: [B, T, H, 3, D]), out [B, T, H, D] of one float dtype; lse
// fp32 [B, H, T]; the dropout mask's coordinates in range.
void check_attention(const char* op, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                     const AttentionConfig& cfg) {
  using namespace detail;
  check_float(op, "qkv", qkv);
  check_float(op, "out", out);
  check_dtype(op, "lse", lse, DType::F32);
  check_attention_config(op, cfg);
  const int64_t H = cfg.n_heads, G = cfg.groups(), D = cfg.head_dim;
  MT_CHECK(qkv.dim() == 5, "{}: qkv {} must be [B, T, G, H/G + 2, D] = [B, T, {}, {}, {}]", op, qkv.str(), G, H / G + 2,
           D);
  const int64_t B = qkv.size(0), T = qkv.size(1);
  check_shape(op, "qkv", qkv, {B, T, G, H / G + 2, D});
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
    MT_USER_ERROR("{}: MT_ATTENTION_BACKEND=cudnn, but cuDNN cannot run qkv {} (heads {}, groups {}, head dim {}, "
                  "dropout {}): {}",
                  op, qkv.str(), cfg.n_heads, cfg.groups(), cfg.head_dim, cfg.dropout_p, why);
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
