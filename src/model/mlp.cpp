#include "model/mlp.h"

namespace mt {

MLP::MLP(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg, const ModelParallelConfig& par)
    : cfg_(cfg),
      fc1_(buf, prefix + ".linear_fc1", cfg.hidden_size, cfg.ffn_hidden_size, par),
      fc2_(buf, prefix + ".linear_fc2", cfg.ffn_hidden_size, cfg.hidden_size, par) {}

void MLP::init(float std, float out_std, uint64_t seed) const {
  fc1_.init(std, seed);
  fc2_.init(out_std, seed);
}

// The GeLU runs inside fc1's forward GEMM and fc2's backward GEMM (gemm.h's gemm_bias_gelu and
// gemm_dgelu: one cuBLASLt call each for bf16/fp16 on CUDA, the unfused ops elsewhere).
Tensor MLP::forward(const Tensor& x, Saved& s) const {
  Tensor act = fc1_.forward_gelu(x, s.fc1_in, &s.pre_act);
  return fc2_.forward(act, s.fc2_in).view(x.shape());
}

Tensor MLP::backward(const Tensor& dy, Saved& s) const {
  const RowParallelLinear::GeluGrad gelu{s.pre_act, fc1_.bias_grad()};  // fc1's db accumulates here
  Tensor dpre = fc2_.backward(dy, s.fc2_in, &gelu);
  Tensor dx = fc1_.backward(dpre, s.fc1_in, /*bias_grad=*/false).view(dy.shape());
  s = Saved{};
  return dx;
}

}  // namespace mt
