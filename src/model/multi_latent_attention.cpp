#include "model/multi_latent_attention.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/rope.h"

namespace mt {
namespace {

// The replicated layers' config: no tensor parallelism, no token gathering.
ModelParallelConfig replicated(const ModelParallelConfig& par) {
  ModelParallelConfig r;
  r.bucket_size = par.bucket_size;
  r.bucket_pad = par.bucket_pad;
  r.expert_bucket_pad = par.expert_bucket_pad;
  return r;
}

// A replicated layer's weight (and bias) see only this rank's tokens under sequence
// parallelism: their grads are partial sums over TP (as a sequence-parallel norm's).
void mark_partial(ParamAndGradBuffer& buf, const std::string& prefix, bool partial) {
  for (const char* p : {".weight", ".bias"}) {
    const auto id = buf.find(prefix + p);
    if (id >= 0) buf.set_sequence_parallel(id, partial);
  }
}

// RoPE's per-token tables rotate qkv as one row of B T tokens (attention.cpp's rope_view).
Tensor rope_view(const Tensor& qkv, const RotaryTables& rope) {
  if (!rope.per_token) return qkv;
  return qkv.view({1, qkv.size(0) * qkv.size(1), qkv.size(2), qkv.size(3), qkv.size(4)});
}

}  // namespace

float mla_softmax_scale(const TransformerConfig& c) {
  const double m = c.rope_type == RopeType::Yarn ? yarn_get_mscale(c.rotary_scaling_factor, c.mscale_all_dim) : 1.0;
  return float(m * m / std::sqrt(double(c.qk_head_dim + c.qk_pos_emb_head_dim)));
}

MLASelfAttention::MLASelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                                   const SelfAttentionSpec& spec, const ModelParallelConfig& par)
    : cfg_(cfg),
      par_(par),
      heads_(cfg.num_attention_heads / par.tp_size()),
      head_offset_(par.tp_rank() * heads_),
      recompute_core_(cfg.selective_recompute().core_attn),
      kv_down_(buf, prefix + ".linear_kv_down_proj", cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_pos_emb_head_dim,
               replicated(par), cfg.add_bias_linear),
      kv_up_(buf, prefix + ".linear_kv_up_proj", cfg.kv_lora_rank,
             cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim), par, cfg.add_bias_linear),
      proj_(buf, prefix + ".linear_proj", cfg.num_attention_heads * cfg.v_head_dim, cfg.hidden_size, par,
            cfg.add_bias_linear) {
  const int q_out = cfg.num_attention_heads * (cfg.qk_head_dim + cfg.qk_pos_emb_head_dim);
  const bool partial = par.sequence_parallel;
  if (cfg.q_lora_rank > 0) {
    q_down_ = std::make_unique<ColumnParallelLinear>(buf, prefix + ".linear_q_down_proj", cfg.hidden_size,
                                                     cfg.q_lora_rank, replicated(par), cfg.add_bias_linear);
    mark_partial(buf, prefix + ".linear_q_down_proj", partial);
    if (spec.qk_layernorm)
      q_norm_ = std::make_unique<Norm>(buf, prefix + ".q_layernorm", cfg.q_lora_rank, Normalization::RMSNorm,
                                       cfg.layernorm_epsilon, partial);
    q_up_ = std::make_unique<ColumnParallelLinear>(buf, prefix + ".linear_q_up_proj", cfg.q_lora_rank, q_out, par,
                                                   cfg.add_bias_linear);
  } else {
    q_up_ = std::make_unique<ColumnParallelLinear>(buf, prefix + ".linear_q_proj", cfg.hidden_size, q_out, par,
                                                   cfg.add_bias_linear);
  }
  mark_partial(buf, prefix + ".linear_kv_down_proj", partial);
  if (spec.qk_layernorm)
    kv_norm_ = std::make_unique<Norm>(buf, prefix + ".kv_layernorm", cfg.kv_lora_rank, Normalization::RMSNorm,
                                      cfg.layernorm_epsilon, partial);
}

int MLASelfAttention::packed_dim() const {
  return std::max(cfg_.qk_head_dim + cfg_.qk_pos_emb_head_dim, cfg_.v_head_dim);
}

void MLASelfAttention::init(float std, float out_std, uint64_t seed) const {
  if (q_down_) q_down_->init(std, seed);
  if (q_norm_) q_norm_->init();
  q_up_->init(std, seed);
  kv_down_.init(std, seed);
  if (kv_norm_) kv_norm_->init();
  kv_up_.init(std, seed);
  proj_.init(out_std, seed);
}

Tensor MLASelfAttention::forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, const RotaryTables* rope,
                                 Saved& s) const {
  const int64_t B = ctx.batch ? ctx.batch : x.size(0), T = ctx.seq ? ctx.seq : x.size(1), N = B * T;
  const int64_t C = cfg_.hidden_size, n = x.numel() / C;  // n: this rank's tokens (N / TP with SP)
  const int64_t H = heads_, Dn = cfg_.qk_head_dim, R = cfg_.qk_pos_emb_head_dim, Dv = cfg_.v_head_dim;
  const int64_t Dq = Dn + R, D = packed_dim(), L = cfg_.kv_lora_rank, NH = N * H;
  const Tensor x2 = x.view({n, C});
  // Queries [N, H Dq] and the key/value latent [n, L + R] split into c_kv and k_pe.
  Tensor q;
  if (q_down_) {
    Tensor c = q_down_->forward(x2, s.q_down_in);
    if (q_norm_) c = q_norm_->forward(c, s.q_norm);
    q = q_up_->forward(c, s.q_up_in);
  } else {
    q = q_up_->forward(x2, s.q_up_in);
  }
  const Tensor kvd = kv_down_.forward(x2, s.kv_down_in);
  Tensor c_kv = Tensor::empty({n, L}, x.dtype(), x.device()), k_pe = Tensor::empty({n, R}, x.dtype(), x.device());
  copy_2d(kvd, 0, L + R, c_kv, 0, L, L, n);
  copy_2d(kvd, L, L + R, k_pe, 0, R, R, n);
  if (par_.sequence_parallel && par_.tp_size() > 1) k_pe = gather_tokens(k_pe, *par_.tp);  // [N, R]
  if (kv_norm_) c_kv = kv_norm_->forward(c_kv, s.kv_norm);
  const Tensor kv = kv_up_.forward(c_kv, s.kv_up_in);  // [N, H (Dn + Dv)]

  // Pack [B, T, H, {q, k, v}, D]: q = [q_pe | q_nope], k = [k_pe | k_nope], v = [v | 0].
  s.qkv = Tensor::empty({B, T, H, 3, D}, x.dtype(), x.device());
  fill(s.qkv, 0.0f);
  copy_2d(q, Dn, Dq, s.qkv, 0, 3 * D, R, NH);
  copy_2d(q, 0, Dq, s.qkv, R, 3 * D, Dn, NH);
  copy_2d(kv, 0, Dn + Dv, s.qkv, D + R, 3 * D, Dn, NH);
  copy_2d(kv, Dn, Dn + Dv, s.qkv, 2 * D, 3 * D, Dv, NH);
  for (int64_t h = 0; h < H; ++h) copy_2d(k_pe, 0, R, s.qkv, h * 3 * D + D, H * 3 * D, R, N);
  MT_CHECK(rope && rope->cos.defined(), "MLASelfAttention: RoPE without angle tables");
  s.rope = *rope;
  rope_forward(rope_view(s.qkv, s.rope), s.rope.cos, s.rope.sin, int(H), int(R));

  s.out = Tensor::empty({B, T, H, D}, x.dtype(), x.device());
  s.core = AttentionConfig{};
  s.core.n_heads = int(H);
  s.core.head_dim = int(D);
  s.core.n_query_groups = int(H);
  s.core.dropout_p = ctx.training ? cfg_.attention_dropout : 0.0f;
  s.core.seed = ctx.seed;
  s.core.stream = ctx.dropout_stream(site);
  s.core.head_offset = head_offset_;  // the dropout mask in global head coordinates
  s.core.total_heads = cfg_.num_attention_heads;
  s.core.softmax_scale = mla_softmax_scale(cfg_);
  if (ctx.positions && (par_.cp_size() > 1 || ctx.positions->document.defined())) s.positions = *ctx.positions;
  core_forward(s);
  Tensor o = Tensor::empty({N, H * Dv}, x.dtype(), x.device());
  copy_2d(s.out, 0, D, o, 0, Dv, Dv, NH);
  Tensor y = proj_.forward(o, s.proj_in).view(x.shape());
  if (recompute_core_) {  // rerun in backward (same config, so the same dropout mask)
    s.out = s.lse = Tensor();
    s.cp = ContextParallelSaved{};
    s.proj_in = RowParallelLinear::Saved{};
  }
  return y;
}

void MLASelfAttention::core_forward(Saved& s) const {
  const int64_t B = s.qkv.size(0), T = s.qkv.size(1);
  s.out = Tensor::empty({B, T, heads_, packed_dim()}, s.qkv.dtype(), s.qkv.device());
  if (s.positions.defined()) {
    context_parallel_attention_forward(s.qkv, s.out, s.core, s.positions, par_, s.cp);
  } else {
    s.lse = Tensor::empty({B, heads_, T}, DType::F32, s.qkv.device());
    attention_forward(s.qkv, s.out, s.lse, s.core);
  }
}

void MLASelfAttention::drop_input(Saved& s) const {
  s.kv_down_in = {};
  if (q_down_)
    s.q_down_in = {};
  else
    s.q_up_in = {};  // linear_q_proj's
}

void MLASelfAttention::restore_input(const Tensor& x, Saved& s) const {
  kv_down_.restore_input(x, s.kv_down_in);
  if (q_down_)
    q_down_->restore_input(x, s.q_down_in);
  else
    q_up_->restore_input(x, s.q_up_in);
}

Tensor MLASelfAttention::backward(const Tensor& dy, Saved& s) const {
  const int64_t B = s.qkv.size(0), T = s.qkv.size(1), N = B * T, C = cfg_.hidden_size, n = dy.numel() / C;
  const int64_t H = heads_, Dn = cfg_.qk_head_dim, R = cfg_.qk_pos_emb_head_dim, Dv = cfg_.v_head_dim;
  const int64_t Dq = Dn + R, D = packed_dim(), L = cfg_.kv_lora_rank, NH = N * H;
  const DType dt = s.qkv.dtype();
  const Device dev = s.qkv.device();
  if (recompute_core_) {
    core_forward(s);
    s.proj_in.x = Tensor::empty({N, H * Dv}, dt, dev);
    copy_2d(s.out, 0, D, s.proj_in.x, 0, Dv, Dv, NH);
  }
  // linear_proj, then the output's padded columns (their gradient is zero).
  const Tensor do_v = proj_.backward(dy.view({n, C}), s.proj_in);  // [N, H Dv]
  Tensor dout = Tensor::empty(s.out.shape(), dt, dev);
  fill(dout, 0.0f);
  copy_2d(do_v, 0, Dv, dout, 0, D, Dv, NH);
  Tensor dqkv = Tensor::empty(s.qkv.shape(), dt, dev);
  if (s.positions.defined()) {
    context_parallel_attention_backward(dout, s.qkv, s.out, dqkv, s.core, s.positions, par_, s.cp);
  } else {
    attention_backward(dout, s.qkv, s.out, s.lse, dqkv, s.core);
  }
  rope_backward(rope_view(dqkv, s.rope), s.rope.cos, s.rope.sin, int(H), int(R));

  // Unpack: dq [N, H Dq], dkv [N, H (Dn + Dv)], dk_pe [N, R] summed over the heads.
  Tensor dq = Tensor::empty({N, H * Dq}, dt, dev), dkv = Tensor::empty({N, H * (Dn + Dv)}, dt, dev);
  copy_2d(dqkv, 0, 3 * D, dq, Dn, Dq, R, NH);
  copy_2d(dqkv, R, 3 * D, dq, 0, Dq, Dn, NH);
  copy_2d(dqkv, D + R, 3 * D, dkv, 0, Dn + Dv, Dn, NH);
  copy_2d(dqkv, 2 * D, 3 * D, dkv, Dn, Dn + Dv, Dv, NH);
  Tensor dk_pe = Tensor::empty({N, R}, dt, dev), head = Tensor::empty({N, R}, dt, dev);
  copy_2d(dqkv, D, H * 3 * D, dk_pe, 0, R, R, N);
  for (int64_t h = 1; h < H; ++h) {
    copy_2d(dqkv, h * 3 * D + D, H * 3 * D, head, 0, R, R, N);
    add(dk_pe, head, dk_pe);
  }
  // Each TP rank's dk_pe is its heads' share: summed over TP (and scattered back to the rank's
  // tokens with sequence parallelism).
  if (par_.tp_size() > 1) {
    if (par_.sequence_parallel)
      dk_pe = reduce_scatter_tokens(dk_pe, *par_.tp);
    else
      par_.tp->all_reduce(dk_pe);
  }
  s.qkv = s.out = s.lse = dqkv = dout = Tensor();

  // Keys and values: the latent's gradient [n, L + R] = [d c_kv | d k_pe].
  Tensor dc_kv = kv_up_.backward(dkv, s.kv_up_in);
  if (kv_norm_) dc_kv = kv_norm_->backward(dc_kv, s.kv_norm);
  Tensor dkvd = Tensor::empty({n, L + R}, dt, dev);
  copy_2d(dc_kv, 0, L, dkvd, 0, L + R, L, n);
  copy_2d(dk_pe, 0, R, dkvd, L, L + R, R, n);
  Tensor dx = kv_down_.backward(dkvd, s.kv_down_in);
  // Queries.
  Tensor dxq;
  if (q_down_) {
    Tensor dc = q_up_->backward(dq, s.q_up_in);
    if (q_norm_) dc = q_norm_->backward(dc, s.q_norm);
    dxq = q_down_->backward(dc, s.q_down_in);
  } else {
    dxq = q_up_->backward(dq, s.q_up_in);
  }
  add(dx, dxq, dx);
  s = Saved{};
  return dx.view(dy.shape());
}

}  // namespace mt
