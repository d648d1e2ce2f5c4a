#include "model/moe_experts.h"

#include "core/error.h"
#include "kernels/activation.h"
#include "kernels/grouped_gemm.h"
#include "kernels/swiglu.h"
#include "model/init_method.h"

namespace mt {

GroupedMLP::GroupedMLP(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                       int first_expert, int num_local_experts, const ModelParallelConfig& par)
    : buf_(buf), gated_(cfg.gated_linear_unit), recompute_act_(cfg.selective_recompute().moe_act),
      hidden_(cfg.hidden_size) {
  const int tp = par.tp_size(), r = par.tp_rank(), F = cfg.moe_ffn_size(), C = cfg.hidden_size;
  MT_CHECK(F % tp == 0, "{}: expert ffn {} does not split over {} tensor-parallel ranks", prefix, F, tp);
  MT_CHECK((cfg.activation == Activation::Silu) == gated_, "{}: experts are SwiGLU (--swiglu) or GeLU MLPs", prefix);
  MT_CHECK(num_local_experts >= 1, "{}: no local experts", prefix);
  ffn_local_ = F / tp;
  auto name = [&](int g, const char* linear) {
    return prefix + ".local_experts." + std::to_string(first_expert + g) + "." + linear + ".weight";
  };
  for (int g = 0; g < num_local_experts; ++g) {
    fc1_.push_back(gated_ ? buf.add_shard(name(g, "linear_fc1"), {2, ffn_local_, C}, {2, F, C}, 1,
                                          int64_t(r) * ffn_local_, false)
                          : buf.add_shard(name(g, "linear_fc1"), {ffn_local_, C}, {F, C}, 0, int64_t(r) * ffn_local_,
                                          false));
  }
  for (int g = 0; g < num_local_experts; ++g)
    fc2_.push_back(buf.add_shard(name(g, "linear_fc2"), {C, ffn_local_}, {C, F}, 1, int64_t(r) * ffn_local_, false));
}

Tensor GroupedMLP::stacked(const std::vector<ParamAndGradBuffer::Id>& ids, bool grad, int64_t rows,
                           int64_t cols) const {
  const int64_t per = rows * cols, G = int64_t(ids.size());
  const ParamInfo& first = buf_.info(ids.front());
  for (int64_t g = 1; g < G; ++g)
    MT_CHECK(buf_.info(ids[size_t(g)]).offset == first.offset + g * per,
             "{}: the experts' weights are not contiguous (sizes not multiples of 16 elements?)", first.name);
  const Tensor& flat = grad ? buf_.main_grads() : buf_.params();
  return flat.flat_slice(first.offset, G * per, {G, rows, cols});
}

void GroupedMLP::init(float std, float out_std, uint64_t seed) const {
  for (auto id : fc1_) init_normal(buf_, id, std, seed);
  for (auto id : fc2_) init_normal(buf_, id, out_std, seed);
}

Tensor GroupedMLP::forward(const Tensor& x, const std::vector<int64_t>& counts, Saved& s) const {
  const int64_t M = x.size(0), f1 = (gated_ ? 2 : 1) * int64_t(ffn_local_);
  s.counts = counts;
  s.x = x;
  s.pre = Tensor::empty({M, f1}, x.dtype(), x.device());
  grouped_gemm_forward(x, stacked(fc1_, false, f1, hidden_), counts, s.pre);
  s.act = Tensor::empty({M, ffn_local_}, x.dtype(), x.device());
  if (gated_)
    swiglu_forward(s.pre, s.act);
  else
    gelu_forward(s.pre, s.act);
  Tensor y = Tensor::empty({M, hidden_}, x.dtype(), x.device());
  grouped_gemm_forward(s.act, stacked(fc2_, false, hidden_, ffn_local_), counts, y);
  if (recompute_act_) s.act = Tensor();
  return y;
}

Tensor GroupedMLP::backward(const Tensor& dy, Saved& s) const {
  const int64_t M = dy.size(0), f1 = (gated_ ? 2 : 1) * int64_t(ffn_local_);
  if (!s.act.defined()) {  // moe_act recomputation: the same kernel on the same input
    s.act = Tensor::empty({M, ffn_local_}, dy.dtype(), dy.device());
    if (gated_)
      swiglu_forward(s.pre, s.act);
    else
      gelu_forward(s.pre, s.act);
  }
  Tensor dact = Tensor::empty({M, ffn_local_}, dy.dtype(), dy.device());
  grouped_gemm_dgrad(dy, stacked(fc2_, false, hidden_, ffn_local_), s.counts, dact);
  grouped_gemm_wgrad(dy, s.act, s.counts, stacked(fc2_, true, hidden_, ffn_local_), 1.0f);
  Tensor dpre = Tensor::empty({M, f1}, dy.dtype(), dy.device());
  if (gated_)
    swiglu_backward(dact, s.pre, dpre);
  else
    gelu_backward(dact, s.pre, dpre);
  grouped_gemm_wgrad(dpre, s.x, s.counts, stacked(fc1_, true, f1, hidden_), 1.0f);
  Tensor dx = Tensor::empty({M, hidden_}, dy.dtype(), dy.device());
  grouped_gemm_dgrad(dpre, stacked(fc1_, false, f1, hidden_), s.counts, dx);
  s = Saved{};
  return dx;
}

}  // namespace mt
