#pragma once
// The normalization slot of a transformer layer (Megatron's TENorm / WrappedTorchNorm role):
// LayerNorm (weight and bias) or RMSNorm (weight only), chosen by the config's normalization.
// Weights live in the model's ParamAndGradBuffer; Saved holds what backward needs for one
// microbatch (mean is LayerNorm's only).
#include <string>

#include "model/param_buffer.h"
#include "model/transformer_config.h"

namespace mt {

class Norm {
 public:
  struct Saved {
    Tensor x, mean, rstd;
  };
  // sequence_parallel: inputs are this rank's share of the tokens, so the weight (and bias)
  // grads are partial sums (reduced over TP by GPTModel::finish_grad_sync).
  Norm(ParamAndGradBuffer& buf, const std::string& prefix, int hidden, Normalization kind, float eps,
       bool sequence_parallel = false);
  void init() const;  // weight 1, bias 0
  // x: [N, C] -> y: [N, C]
  Tensor forward(const Tensor& x, Saved& saved) const;
  // The norm of the residual sum x + r, which is written to *sum (the pre-norm block's
  // x1 = x + branch and norm(x1) in one pass: layernorm.h's / rmsnorm.h's fused pairs).
  Tensor forward_add(const Tensor& x, const Tensor& r, Tensor* sum, Saved& saved) const;
  // Accumulates the weight (and bias) grads into main grads; returns dx, plus *dresidual when
  // given (the gradient that went around the branch). Releases saved tensors.
  Tensor backward(const Tensor& dy, Saved& saved, const Tensor* dresidual = nullptr) const;

 private:
  ParamAndGradBuffer& buf_;
  Normalization kind_;
  ParamAndGradBuffer::Id w_, b_ = -1;
  int hidden_;
  float eps_;
};

}  // namespace mt
