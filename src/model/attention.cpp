#include "model/attention.h"

namespace mt {

SelfAttention::SelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg,
                             const ModelParallelConfig& par)
    : cfg_(cfg),
      heads_(cfg.num_attention_heads / par.tp_size()),
      qkv_(buf, prefix + ".linear_qkv", cfg.hidden_size, 3 * cfg.hidden_size, par),
      proj_(buf, prefix + ".linear_proj", cfg.hidden_size, cfg.hidden_size, par) {}

void SelfAttention::init(float std, float out_std, uint64_t seed) const {
  qkv_.init(std, seed);
  proj_.init(out_std, seed);
}

Tensor SelfAttention::forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, Saved& s) const {
  const int64_t B = ctx.batch ? ctx.batch : x.size(0), T = ctx.seq ? ctx.seq : x.size(1);
  const int H = heads_, D = cfg_.head_dim();
  s.qkv = qkv_.forward(x, s.qkv_in).view({B, T, H, 3, D});
  s.out = Tensor::empty({B, T, H, D}, x.dtype(), x.device());
  s.lse = Tensor::empty({B, H, T}, DType::F32, x.device());
  s.core = AttentionConfig{H, D, ctx.training ? cfg_.attention_dropout : 0.0f, ctx.seed, ctx.dropout_stream(site)};
  attention_forward(s.qkv, s.out, s.lse, s.core);
  return proj_.forward(s.out, s.proj_in).view(x.shape());
}

Tensor SelfAttention::backward(const Tensor& dy, Saved& s) const {
  Tensor dout = proj_.backward(dy, s.proj_in).view(s.out.shape());
  Tensor dqkv = Tensor::empty(s.qkv.shape(), s.qkv.dtype(), s.qkv.device());
  attention_backward(dout, s.qkv, s.out, s.lse, dqkv, s.core);
  Tensor dx = qkv_.backward(dqkv, s.qkv_in).view(dy.shape());
  s = Saved{};
  return dx;
}

}  // namespace mt
