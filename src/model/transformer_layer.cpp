#include "model/transformer_layer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/elementwise.h"

namespace mt {

std::vector<HiddenRun> hidden_element_runs(const ModelParallelConfig& par, int64_t local_numel, int64_t hidden,
                                           const TokenPositions* positions) {
  const bool split = par.sequence_parallel && par.tp_size() > 1;
  if (!positions || par.cp_size() == 1)
    return {{0, local_numel, split ? uint64_t(par.tp_rank()) * uint64_t(local_numel) : 0}};
  // This rank's tokens [lo, lo + n) of the context-parallel rank's tokens, as runs of the sequence.
  const int64_t n = local_numel / hidden, lo = split ? par.tp_rank() * n : 0;
  std::vector<HiddenRun> runs;
  for (const TokenRun& r : positions->runs) {
    const int64_t a = std::max(r.local, lo), b = std::min(r.local + r.count, lo + n);
    if (a < b) runs.push_back({(a - lo) * hidden, (b - a) * hidden, uint64_t(r.global + (a - r.local)) * uint64_t(hidden)});
  }
  return runs;
}

void hidden_dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const std::vector<HiddenRun>& runs) {
  for (const HiddenRun& r : runs) {
    const Tensor part = runs.size() == 1 ? x : x.flat_slice(r.offset, r.count, {r.count});
    dropout_forward(part, part, p, seed, stream, {}, r.index);
  }
}

void hidden_dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream,
                             const std::vector<HiddenRun>& runs) {
  for (const HiddenRun& r : runs) {
    if (runs.size() == 1) {
      dropout_backward(dy, dx, p, seed, stream, {}, r.index);
    } else {
      dropout_backward(dy.flat_slice(r.offset, r.count, {r.count}), dx.flat_slice(r.offset, r.count, {r.count}), p,
                       seed, stream, {}, r.index);
    }
  }
}

TransformerLayer::TransformerLayer(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                                   const TransformerLayerSpec& spec, int layer_number, const ModelParallelConfig& par,
                                   ParamAndGradBuffer* expert_buf)
    : cfg_(cfg),
      par_(par),
      layer_number_(layer_number),
      ln1_(buf, prefix + ".input_layernorm", cfg.hidden_size, spec.input_layernorm, cfg.layernorm_epsilon,
           par.sequence_parallel),
      // In the initialiser list, between the norms: the buffer keeps its parameter order.
      attn_(spec.self_attention.multi_latent
                ? nullptr
                : std::make_unique<SelfAttention>(buf, prefix + ".self_attention", cfg, spec.self_attention, par)),
      mla_(spec.self_attention.multi_latent
               ? std::make_unique<MLASelfAttention>(buf, prefix + ".self_attention", cfg, spec.self_attention, par)
               : nullptr),
      ln2_(buf, prefix + ".pre_mlp_layernorm", cfg.hidden_size, spec.pre_mlp_layernorm, cfg.layernorm_epsilon,
           par.sequence_parallel),
      recompute_norms_(cfg.selective_recompute().layernorm),
      recompute_mlp_(cfg.selective_recompute().mlp && !spec.moe) {
  if (spec.moe) {
    MT_CHECK(expert_buf, "{}: an MoE layer needs the model's expert buffer", prefix);
    moe_ = std::make_unique<MoELayer>(buf, *expert_buf, prefix + ".mlp", cfg, layer_number, par);
  } else {
    mlp_ = std::make_unique<MLP>(buf, prefix + ".mlp", cfg, spec.mlp, par, cfg.layer_recomputes_gelu(layer_number));
  }
}

void TransformerLayer::init(uint64_t seed) const {
  // Megatron: output projections scaled by 1/sqrt(2 * num_layers).
  float std = cfg_.init_method_std;
  float out_std = std / std::sqrt(2.0f * float(cfg_.num_layers));
  ln1_.init();
  if (mla_)
    mla_->init(std, out_std, seed);
  else
    attn_->init(std, out_std, seed);
  ln2_.init();
  if (moe_)
    moe_->init(std, out_std, seed);
  else
    mlp_->init(std, out_std, seed);
}

Tensor TransformerLayer::forward(const Tensor& x, const ForwardContext& ctx, const RotaryTables* rope,
                                 Saved& s) const {
  uint64_t site = rng_stream("dropout/layer") + uint64_t(layer_number_) * 4;
  s.dropout_p = ctx.training ? cfg_.hidden_dropout : 0.0f;
  s.seed = ctx.seed;
  s.attn_drop_stream = ctx.dropout_stream(site + 1);
  s.mlp_drop_stream = ctx.dropout_stream(site + 2);
  s.drop_runs = hidden_element_runs(par_, x.numel(), cfg_.hidden_size, ctx.positions);

  const Tensor xn = ln1_.forward(x, s.ln1).view(x.shape());
  Tensor a = mla_ ? mla_->forward(xn, ctx, site, rope, s.mla) : attn_->forward(xn, ctx, site, rope, s.attn);
  hidden_dropout_forward(a, s.dropout_p, s.seed, s.attn_drop_stream, s.drop_runs);
  Tensor x1;  // x + a, and ln2 of it, in one pass
  Tensor h = ln2_.forward_add(x, a, &x1, s.ln2);
  Tensor m = moe_ ? moe_->forward(h.view(x.shape()), ctx, s.moe) : mlp_->forward(h.view(x.shape()), s.mlp);
  // Selective recomputation: what backward rebuilds is let go here (see backward).
  if (recompute_norms_) {
    if (mla_)
      mla_->drop_input(s.mla);
    else
      attn_->drop_input(s.attn);
    if (moe_)
      moe_->drop_input(s.moe);
    else
      mlp_->drop_input(s.mlp);
  }
  if (recompute_mlp_) {
    s.mlp = MLP::Saved{};
    if (!recompute_norms_) s.mlp_in = h.view(x.shape());
  }
  hidden_dropout_forward(m, s.dropout_p, s.seed, s.mlp_drop_stream, s.drop_runs);
  add(x1, m, m);
  return m;
}

// Without dropout its backward is the identity: the branch reads the incoming gradient itself
// instead of a copy (neither branch writes to its dy).
Tensor TransformerLayer::backward(const Tensor& dy, Saved& s) const {
  const Shape shape = dy.shape();
  auto dropout_grad = [&](const Tensor& g, uint64_t stream) {
    if (s.dropout_p == 0.0f) return g;
    Tensor d = Tensor::empty(shape, g.dtype(), g.device());
    hidden_dropout_backward(g, d, s.dropout_p, s.seed, stream, s.drop_runs);
    return d;
  };
  // Selective recomputation: each branch's dropped activations are rebuilt by rerunning its
  // forward steps on the kept inputs (the same kernels on the same values: the same bits).
  if (recompute_norms_ || recompute_mlp_) {
    Tensor h = s.mlp_in;
    if (recompute_norms_) {
      Norm::Saved again;
      h = ln2_.forward(s.ln2.x, again).view(shape);
    }
    if (recompute_mlp_)
      mlp_->forward(h, s.mlp);
    else if (moe_)
      moe_->restore_input(h, s.moe);
    else
      mlp_->restore_input(h, s.mlp);
    s.mlp_in = Tensor();
  }
  // MLP branch; ln2's dx and the residual's dy are summed in its backward.
  const Tensor dm = dropout_grad(dy, s.mlp_drop_stream);
  Tensor dx1 = ln2_.backward(moe_ ? moe_->backward(dm, s.moe) : mlp_->backward(dm, s.mlp), s.ln2, &dy).view(shape);
  // Attention branch, likewise.
  if (recompute_norms_) {
    Norm::Saved again;
    const Tensor xn = ln1_.forward(s.ln1.x, again).view(shape);
    if (mla_)
      mla_->restore_input(xn, s.mla);
    else
      attn_->restore_input(xn, s.attn);
  }
  const Tensor da = dropout_grad(dx1, s.attn_drop_stream);
  Tensor dx = ln1_.backward(mla_ ? mla_->backward(da, s.mla) : attn_->backward(da, s.attn), s.ln1, &dx1).view(shape);
  s = Saved{};
  return dx;
}

Tensor TransformerLayer::forward_inference(const Tensor& x, const InferenceStep& step, const Tensor& k_cache,
                                           const Tensor& v_cache) const {
  Norm::Saved ln1, ln2;
  MLP::Saved mlp;
  MoELayer::Saved moe;
  if (mla_) MT_USER_ERROR("generation with multi-latent attention is not supported yet (its KV cache)");
  Tensor a = attn_->forward_inference(ln1_.forward(x, ln1).view(x.shape()), step, k_cache, v_cache);
  Tensor x1;  // x + a, and ln2 of it, in one pass
  Tensor h = ln2_.forward_add(x, a, &x1, ln2);
  ForwardContext eval;
  eval.training = false;
  eval.seq = x.dim() == 3 ? x.size(1) : 0;
  Tensor m = moe_ ? moe_->forward(h.view(x.shape()), eval, moe) : mlp_->forward(h.view(x.shape()), mlp);
  add(x1, m, m);
  return m;
}

}  // namespace mt
