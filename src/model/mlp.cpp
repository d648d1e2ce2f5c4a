#include "model/mlp.h"

#include "kernels/activation.h"

namespace mt {

MLP::MLP(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg, const ModelParallelConfig& par,
         bool recompute_gelu)
    : cfg_(cfg),
      recompute_gelu_(recompute_gelu),
      fc1_(buf, prefix + ".linear_fc1", cfg.hidden_size, cfg.ffn_hidden_size, par),
      fc2_(buf, prefix + ".linear_fc2", cfg.ffn_hidden_size, cfg.hidden_size, par) {}

void MLP::init(float std, float out_std, uint64_t seed) const {
  fc1_.init(std, seed);
  fc2_.init(out_std, seed);
}

// The GeLU runs inside fc1's forward GEMM and fc2's backward GEMM (gemm.h's gemm_bias_gelu and
// gemm_dgelu: one cuBLASLt call each for bf16/fp16 on CUDA, the unfused ops elsewhere).
//
// By default fc1's GeLU output (fc2's input) is kept from the forward GEMM's epilogue for fc2's
// weight gradient. With recompute_gelu (--recompute-gelu; with --recompute-num-layers N, in the
// first N layers only) just the pre-activation is kept and gelu(pre) is recomputed in backward (as
// torch.compile's partitioner does): N x ffn elements less per layer (0.27 GB per layer of GPT 1.3B
// at 8 x 2048 tokens) for one elementwise pass (~0.67 ms of a 33 ms GPT-124M step on an H200). On
// CUDA the recomputed values may differ from the fused epilogue's by an ulp.
Tensor MLP::forward(const Tensor& x, Saved& s) const {
  Tensor act = fc1_.forward_gelu(x, s.fc1_in, &s.pre_act);
  Tensor y = fc2_.forward(act, s.fc2_in).view(x.shape());
  if (recompute_gelu_) s.fc2_in = RowParallelLinear::Saved{};  // recomputed in backward
  return y;
}

Tensor MLP::backward(const Tensor& dy, Saved& s) const {
  if (recompute_gelu_) {
    Tensor act = Tensor::empty(s.pre_act.shape(), s.pre_act.dtype(), s.pre_act.device());
    gelu_forward(s.pre_act, act);
    s.fc2_in.x = act.view({act.numel() / act.size(-1), act.size(-1)});
  }
  const RowParallelLinear::GeluGrad gelu{s.pre_act, fc1_.bias_grad()};  // fc1's db accumulates here
  Tensor dpre = fc2_.backward(dy, s.fc2_in, &gelu);
  Tensor dx = fc1_.backward(dpre, s.fc1_in, /*bias_grad=*/false).view(dy.shape());
  s = Saved{};
  return dx;
}

}  // namespace mt
