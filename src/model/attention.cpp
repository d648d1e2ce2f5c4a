#include "model/attention.h"

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/kv_cache.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace mt {
namespace {

// RoPE's tables are per position ([S, R/2], applied to every sample's token t) or, with explicit
// positions, per token ([B T, R/2]): then qkv is rotated as one row of B T tokens.
Tensor rope_view(const Tensor& qkv, const RotaryTables& rope) {
  if (!rope.per_token) return qkv;
  return qkv.view({1, qkv.size(0) * qkv.size(1), qkv.size(2), qkv.size(3), qkv.size(4)});
}

}  // namespace

SelfAttention::SelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                             const SelfAttentionSpec& spec, const ModelParallelConfig& par)
    : cfg_(cfg),
      spec_(spec),
      buf_(buf),
      par_(par),
      heads_(cfg.num_attention_heads / par.tp_size()),
      groups_(cfg.query_groups() / par.tp_size()),
      head_offset_(par.tp_rank() * heads_),
      recompute_core_(cfg.selective_recompute().core_attn),
      qkv_(buf, prefix + ".linear_qkv", cfg.hidden_size, cfg.query_projection_size() + 2 * cfg.kv_projection_size(),
           par, cfg.has_qkv_bias()),
      proj_(buf, prefix + ".linear_proj", cfg.query_projection_size(), cfg.hidden_size, par, cfg.add_bias_linear) {
  if (spec.qk_layernorm) {
    // Shared by all heads, so each tensor-parallel rank's grad (from its heads) is partial.
    const bool partial = par.tp_size() > 1;
    q_norm_ = buf.add(prefix + ".q_layernorm.weight", {cfg.head_dim()}, true);
    k_norm_ = buf.add(prefix + ".k_layernorm.weight", {cfg.head_dim()}, true);
    buf.set_sequence_parallel(q_norm_, partial);
    buf.set_sequence_parallel(k_norm_, partial);
  }
}

void SelfAttention::init(float std, float out_std, uint64_t seed) const {
  qkv_.init(std, seed);
  if (q_norm_ >= 0) {
    fill(buf_.param(q_norm_), 1.0f);
    fill(buf_.param(k_norm_), 1.0f);
  }
  proj_.init(out_std, seed);
}

Tensor SelfAttention::forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, const RotaryTables* rope,
                              Saved& s) const {
  const int64_t B = ctx.batch ? ctx.batch : x.size(0), T = ctx.seq ? ctx.seq : x.size(1);
  const int H = heads_, G = groups_, D = cfg_.head_dim();
  s.qkv = qkv_.forward(x, s.qkv_in).view({B, T, G, H / G + 2, D});
  if (spec_.qk_layernorm) {
    s.qkv_pre_norm = s.qkv;
    s.qkv = Tensor::empty(s.qkv_pre_norm.shape(), x.dtype(), x.device());
    s.qk_rstd = Tensor::empty({B * T * G * (H / G + 1)}, DType::F32, x.device());
    qk_rmsnorm_forward(s.qkv_pre_norm, buf_.param(q_norm_), buf_.param(k_norm_), G, cfg_.layernorm_epsilon, s.qkv,
                       s.qk_rstd);
  }
  if (spec_.rotary) {
    MT_CHECK(rope && rope->cos.defined(), "SelfAttention: RoPE without angle tables");
    s.rope = *rope;
    rope_forward(rope_view(s.qkv, s.rope), s.rope.cos, s.rope.sin, G, cfg_.rotary_dim());
  }
  s.core = AttentionConfig{};
  s.core.n_heads = H;
  s.core.head_dim = D;
  s.core.n_query_groups = G;
  s.core.dropout_p = ctx.training ? cfg_.attention_dropout : 0.0f;
  s.core.seed = ctx.seed;
  s.core.stream = ctx.dropout_stream(site);
  // The dropout mask in global head coordinates: every tensor-parallel layout draws one rank's mask.
  s.core.head_offset = head_offset_;
  s.core.total_heads = cfg_.num_attention_heads;
  if (ctx.positions && (par_.cp_size() > 1 || ctx.positions->document.defined())) s.positions = *ctx.positions;
  core_forward(s);
  Tensor y = proj_.forward(s.out, s.proj_in).view(x.shape());
  if (recompute_core_) {  // rerun in backward (same config, so the same dropout mask)
    s.out = Tensor();
    s.lse = Tensor();
    s.cp = ContextParallelSaved{};
    s.proj_in = RowParallelLinear::Saved{};
  }
  return y;
}

// Core attention from s.qkv into s.out (and what its backward needs): the whole-sequence kernel,
// or through context_parallel_attention.h when the tokens' positions are explicit.
void SelfAttention::core_forward(Saved& s) const {
  const int64_t B = s.qkv.size(0), T = s.qkv.size(1);
  s.out = Tensor::empty({B, T, heads_, cfg_.head_dim()}, s.qkv.dtype(), s.qkv.device());
  if (s.positions.defined()) {
    context_parallel_attention_forward(s.qkv, s.out, s.core, s.positions, par_, s.cp);
  } else {
    s.lse = Tensor::empty({B, heads_, T}, DType::F32, s.qkv.device());
    attention_forward(s.qkv, s.out, s.lse, s.core);
  }
}

Tensor SelfAttention::backward(const Tensor& dy, Saved& s) const {
  if (recompute_core_) {
    core_forward(s);
    s.proj_in.x = s.out.view({s.qkv.size(0) * s.qkv.size(1), int64_t(heads_) * cfg_.head_dim()});
  }
  Tensor dout = proj_.backward(dy, s.proj_in).view(s.out.shape());
  Tensor dqkv = Tensor::empty(s.qkv.shape(), s.qkv.dtype(), s.qkv.device());
  if (s.positions.defined()) {
    context_parallel_attention_backward(dout, s.qkv, s.out, dqkv, s.core, s.positions, par_, s.cp);
  } else {
    attention_backward(dout, s.qkv, s.out, s.lse, dqkv, s.core);
  }
  if (spec_.rotary) rope_backward(rope_view(dqkv, s.rope), s.rope.cos, s.rope.sin, groups_, cfg_.rotary_dim());
  if (spec_.qk_layernorm) {
    Tensor d = Tensor::empty(dqkv.shape(), dqkv.dtype(), dqkv.device());
    qk_rmsnorm_backward(dqkv, s.qkv_pre_norm, buf_.param(q_norm_), buf_.param(k_norm_), groups_, s.qk_rstd, d,
                        buf_.grad(q_norm_), buf_.grad(k_norm_));
    dqkv = d;
  }
  Tensor dx = qkv_.backward(dqkv, s.qkv_in).view(dy.shape());
  s = Saved{};
  return dx;
}

// The training forward's steps without dropout or saved state, with RoPE at each token's own
// position (the step's per-token tables, so qkv is rotated as one row of B T tokens), then the
// cache: a prefill from empty caches runs the causal training kernel on the new tokens alone
// (the same values, and cuDNN's flash attention on GPUs); any other step attends over the cache.
Tensor SelfAttention::forward_inference(const Tensor& x, const InferenceStep& step, const Tensor& k_cache,
                                        const Tensor& v_cache) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int H = heads_, G = groups_, D = cfg_.head_dim();
  ColumnParallelLinear::Saved qkv_in;
  Tensor qkv = qkv_.forward(x, qkv_in).view({B, T, G, H / G + 2, D});
  if (spec_.qk_layernorm) {
    Tensor normed = Tensor::empty(qkv.shape(), x.dtype(), x.device());
    Tensor rstd = Tensor::empty({B * T * G * (H / G + 1)}, DType::F32, x.device());
    qk_rmsnorm_forward(qkv, buf_.param(q_norm_), buf_.param(k_norm_), G, cfg_.layernorm_epsilon, normed, rstd);
    qkv = normed;
  }
  if (spec_.rotary) {
    MT_CHECK(step.cos.defined(), "SelfAttention::forward_inference: RoPE without the step's angle tables");
    rope_forward(qkv.view({1, B * T, G, H / G + 2, D}), step.cos, step.sin, G, cfg_.rotary_dim());
  }
  kv_cache_append(qkv, step.start, k_cache, v_cache);
  Tensor out = Tensor::empty({B, T, H, D}, x.dtype(), x.device());
  AttentionConfig core{};
  core.n_heads = H;
  core.head_dim = D;
  core.n_query_groups = G;
  if (step.from_empty) {
    Tensor lse = Tensor::empty({B, H, T}, DType::F32, x.device());
    attention_forward(qkv, out, lse, core);
  } else {
    kv_cache_attention(qkv, k_cache, v_cache, step.start, out, core);
  }
  RowParallelLinear::Saved proj_in;
  return proj_.forward(out, proj_in).view(x.shape());
}

}  // namespace mt
