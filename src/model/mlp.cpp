#include "model/mlp.h"

#include "core/error.h"
#include "kernels/activation.h"
#include "kernels/swiglu.h"

namespace mt {

MLP::MLP(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg, MlpKind kind,
         const ModelParallelConfig& par, bool recompute_activation)
    : kind_(kind),
      recompute_(recompute_activation),
      fc1_(buf, prefix + ".linear_fc1", cfg.hidden_size, (kind == MlpKind::Gated ? 2 : 1) * cfg.ffn_hidden_size, par,
           cfg.add_bias_linear, kind == MlpKind::Gated ? 2 : 1),
      fc2_(buf, prefix + ".linear_fc2", cfg.ffn_hidden_size, cfg.hidden_size, par, cfg.add_bias_linear) {
  // The kernels megatron.cpp has: GeLU fused into the dense MLP's GEMMs, SiLU in the gated one.
  MT_CHECK((kind == MlpKind::Dense) == (cfg.activation == Activation::Gelu),
           "{}: a {} MLP with {} has no kernel (GeLU dense or SwiGLU)", prefix,
           kind == MlpKind::Gated ? "gated" : "dense", cfg.activation == Activation::Gelu ? "GeLU" : "SiLU");
}

void MLP::init(float std, float out_std, uint64_t seed) const {
  fc1_.init(std, seed);
  fc2_.init(out_std, seed);
}

// Dense: the GeLU runs inside fc1's forward GEMM and fc2's backward GEMM (gemm.h's gemm_bias_gelu
// and gemm_dgelu: one cuBLASLt call each for bf16/fp16 on CUDA, the unfused ops elsewhere).
// Gated: fc1's output [N, 2 F/TP] goes through swiglu (one pass) to fc2.
//
// By default the activation's output (fc2's input) is kept for fc2's weight gradient. With
// recomputation (--recompute-gelu; with --recompute-num-layers N, in the first N layers only) just
// the pre-activation is kept and the activation is recomputed in backward (as torch.compile's
// partitioner does): N x ffn elements less per layer for one elementwise pass. On CUDA the
// recomputed GeLU may differ from the fused epilogue's by an ulp.
Tensor MLP::forward(const Tensor& x, Saved& s) const {
  Tensor act;
  if (kind_ == MlpKind::Gated) {
    s.pre_act = fc1_.forward(x, s.fc1_in);
    const int64_t n = s.pre_act.size(0), f = s.pre_act.size(1) / 2;
    act = Tensor::empty({n, f}, x.dtype(), x.device());
    swiglu_forward(s.pre_act, act);
  } else {
    act = fc1_.forward(x, s.fc1_in, Epilogue::Gelu, &s.pre_act);
  }
  Tensor y = fc2_.forward(act, s.fc2_in).view(x.shape());
  if (recompute_) s.fc2_in = RowParallelLinear::Saved{};  // recomputed in backward
  return y;
}

Tensor MLP::backward(const Tensor& dy, Saved& s) const {
  if (recompute_) {
    const int64_t n = s.pre_act.size(0), f = s.pre_act.size(1) / (kind_ == MlpKind::Gated ? 2 : 1);
    Tensor act = Tensor::empty({n, f}, s.pre_act.dtype(), s.pre_act.device());
    if (kind_ == MlpKind::Gated)
      swiglu_forward(s.pre_act, act);
    else
      gelu_forward(s.pre_act, act);
    s.fc2_in.x = act;
  }
  Tensor dx;
  if (kind_ == MlpKind::Gated) {
    Tensor dact = fc2_.backward(dy, s.fc2_in);
    Tensor dpre = Tensor::empty(s.pre_act.shape(), s.pre_act.dtype(), s.pre_act.device());
    swiglu_backward(dact.view({s.pre_act.size(0), s.pre_act.size(1) / 2}), s.pre_act, dpre);
    dx = fc1_.backward(dpre, s.fc1_in).view(dy.shape());
  } else {
    const RowParallelLinear::InputEpilogue gelu{Epilogue::Gelu, s.pre_act, fc1_.bias_grad()};  // fc1's db accumulates here
    Tensor dpre = fc2_.backward(dy, s.fc2_in, &gelu);
    dx = fc1_.backward(dpre, s.fc1_in, /*bias_grad=*/false).view(dy.shape());
  }
  s = Saved{};
  return dx;
}

}  // namespace mt
