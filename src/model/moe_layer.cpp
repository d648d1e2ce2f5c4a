#include "model/moe_layer.h"

#include "core/error.h"
#include "kernels/elementwise.h"
#include "model/tensor_parallel.h"

namespace mt {
namespace {

TransformerConfig shared_expert_config(const TransformerConfig& cfg) {
  TransformerConfig c = cfg;
  c.ffn_hidden_size = cfg.moe_shared_expert_intermediate_size;
  return c;
}

}  // namespace

MoELayer::MoELayer(ParamAndGradBuffer& buf, ParamAndGradBuffer& expert_buf, const std::string& prefix,
                   const TransformerConfig& cfg, int layer_number, const ModelParallelConfig& par)
    : cfg_(cfg),
      par_(par),
      router_(buf, prefix + ".router", cfg, layer_number, par.dp),
      dispatcher_(make_token_dispatcher(cfg, par.ep)),
      experts_(expert_buf, prefix + ".experts", cfg, dispatcher_->first_local_expert(),
               dispatcher_->num_local_experts(), par),
      recompute_moe_(cfg.selective_recompute().moe),
      recompute_shared_(cfg.selective_recompute().shared_experts && cfg.moe_shared_expert_intermediate_size > 0) {
  MT_CHECK(!cfg.add_bias_linear, "{}: MoE experts have no biases (--disable-bias-linear)", prefix);
  if (cfg.moe_shared_expert_intermediate_size > 0)
    shared_ = std::make_unique<MLP>(buf, prefix + ".shared_experts", shared_expert_config(cfg),
                                    cfg.gated_linear_unit ? MlpKind::Gated : MlpKind::Dense, par);
}

void MoELayer::init(float std, float out_std, uint64_t seed) const {
  router_.init(std, seed);
  experts_.init(std, out_std, seed);
  if (shared_) shared_->init(std, out_std, seed);
}

// The routed experts' part of forward: router, dispatch, experts, combine, the TP reduction.
Tensor MoELayer::forward_routed(const Tensor& x, const ForwardContext& ctx, Saved& s) const {
  const int64_t C = cfg_.hidden_size;
  const bool tp = par_.tp_size() > 1, sp = tp && par_.sequence_parallel;
  s.shape = x.shape();
  Tensor x2 = x.view({x.numel() / C, C});
  Tensor tokens = sp ? gather_tokens(x2, *par_.tp) : x2;  // the whole microbatch
  router_.forward(tokens, ctx.seq > 0 ? ctx.seq : tokens.size(0), ctx, s.router);
  Tensor rows = dispatcher_->dispatch(tokens, s.router.indices, s.router.probs, s.dispatcher);
  Tensor out = dispatcher_->combine(experts_.forward(rows, s.dispatcher.rows_per_local_expert, s.experts), s.dispatcher);
  if (sp)
    out = reduce_scatter_tokens(out, *par_.tp);
  else if (tp)
    par_.tp->all_reduce(out);
  return out;
}

// Recomputation keeps x and a copy of ctx without its metrics sink: the rerun routes the same
// tokens the same way (the expert bias only moves after the step) and recomputes the auxiliary
// losses' gradient (weighted by ctx.moe_loss_scale) without counting the losses again.
Tensor MoELayer::forward(const Tensor& x, const ForwardContext& ctx, Saved& s) const {
  Tensor out = forward_routed(x, ctx, s);
  if (shared_) add(out, shared_->forward(x, s.shared).view(out.shape()), out);
  if (recompute_moe_ || recompute_shared_) {
    s.x = x;
    s.ctx = ctx;
    s.ctx.moe_metrics = nullptr;
  }
  if (recompute_moe_) {
    s.router = {};
    s.dispatcher = {};
    s.experts = {};
    s.shared = {};
  } else if (recompute_shared_) {
    s.shared = {};
  }
  return out.view(s.shape);
}

void MoELayer::drop_input(Saved& s) const {
  s.router.x = Tensor();
  if (shared_) shared_->drop_input(s.shared);
  s.x = Tensor();
}

void MoELayer::restore_input(const Tensor& x, Saved& s) const {
  if (recompute_moe_ || recompute_shared_) s.x = x;
  if (recompute_moe_) return;  // everything is rerun from s.x
  const int64_t C = cfg_.hidden_size;
  const bool sp = par_.tp_size() > 1 && par_.sequence_parallel;
  Tensor x2 = x.view({x.numel() / C, C});
  s.router.x = sp ? gather_tokens(x2, *par_.tp) : x2;
  if (shared_ && !recompute_shared_) shared_->restore_input(x, s.shared);
}

Tensor MoELayer::backward(const Tensor& dy, Saved& s) const {
  if (recompute_moe_) forward_routed(s.x, s.ctx, s);
  if (shared_ && (recompute_moe_ || recompute_shared_)) shared_->forward(s.x, s.shared);
  const int64_t C = cfg_.hidden_size;
  const bool tp = par_.tp_size() > 1, sp = tp && par_.sequence_parallel;
  Tensor dy2 = dy.view({dy.numel() / C, C});
  Tensor dout = sp ? gather_tokens(dy2, *par_.tp) : dy2;
  Tensor dprobs;
  Tensor drows = dispatcher_->combine_backward(dout, s.dispatcher, dprobs);
  if (tp) par_.tp->all_reduce(dprobs);  // <dout, expert output> of partial outputs
  Tensor dtokens = dispatcher_->dispatch_backward(experts_.backward(drows, s.experts), s.dispatcher);
  if (sp)
    dtokens = reduce_scatter_tokens(dtokens, *par_.tp);
  else if (tp)
    par_.tp->all_reduce(dtokens);
  const Tensor hp = dprobs.is_cuda() ? dprobs.to(Device::cpu()) : dprobs;
  Tensor drouter = router_.backward(std::vector<float>(hp.data<float>(), hp.data<float>() + hp.numel()), s.router);
  // The router saw every token: this rank's rows of its input gradient.
  if (sp) drouter = drouter.narrow0(int64_t(par_.tp_rank()) * dtokens.size(0), dtokens.size(0));
  add(dtokens, drouter, dtokens);
  if (shared_) add(dtokens, shared_->backward(dy, s.shared).view(dtokens.shape()), dtokens);
  Shape shape = s.shape;
  s = Saved{};
  return dtokens.view(shape);
}

}  // namespace mt
