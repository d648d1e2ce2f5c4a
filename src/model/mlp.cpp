#include "model/mlp.h"

#include "kernels/activation.h"

namespace mt {

MLP::MLP(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg, const ModelParallelConfig& par)
    : cfg_(cfg),
      fc1_(buf, prefix + ".linear_fc1", cfg.hidden_size, cfg.ffn_hidden_size, par),
      fc2_(buf, prefix + ".linear_fc2", cfg.ffn_hidden_size, cfg.hidden_size, par) {}

void MLP::init(float std, float out_std, uint64_t seed) const {
  fc1_.init(std, seed);
  fc2_.init(out_std, seed);
}

Tensor MLP::forward(const Tensor& x, Saved& s) const {
  s.pre_act = fc1_.forward(x, s.fc1_in);
  Tensor act = Tensor::empty(s.pre_act.shape(), s.pre_act.dtype(), s.pre_act.device());
  gelu_forward(s.pre_act, act);
  return fc2_.forward(act, s.fc2_in).view(x.shape());
}

Tensor MLP::backward(const Tensor& dy, Saved& s) const {
  Tensor dact = fc2_.backward(dy, s.fc2_in);
  gelu_backward(dact, s.pre_act, dact);  // in place
  Tensor dx = fc1_.backward(dact, s.fc1_in).view(dy.shape());
  s = Saved{};
  return dx;
}

}  // namespace mt
