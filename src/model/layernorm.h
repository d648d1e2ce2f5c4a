#pragma once
// LayerNorm layer over the hidden dimension; weight and bias views live in the model's
// ParamAndGradBuffer. Saved holds what backward needs for one microbatch.
#include <string>

#include "model/param_buffer.h"

namespace mt {

class LayerNorm {
 public:
  struct Saved {
    Tensor x, mean, rstd;
  };
  // sequence_parallel: inputs are this rank's share of the tokens, so the weight and bias grads
  // are partial sums (reduced over TP by GPTModel::finish_grad_sync).
  LayerNorm(ParamAndGradBuffer& buf, const std::string& prefix, int hidden, float eps, bool sequence_parallel = false);
  void init() const;  // weight 1, bias 0
  // x: [N, C] -> y: [N, C]
  Tensor forward(const Tensor& x, Saved& saved) const;
  // LayerNorm of the residual sum x + r, which is written to *sum (layernorm.h's
  // add_layernorm_forward): the pre-LN block's x1 = x + branch, ln(x1) in one pass.
  Tensor forward_add(const Tensor& x, const Tensor& r, Tensor* sum, Saved& saved) const;
  // Accumulates dweight, dbias into main grads; returns dx, plus *dresidual when given (the
  // gradient that went around the branch: layernorm_backward_add). Releases saved tensors.
  Tensor backward(const Tensor& dy, Saved& saved, const Tensor* dresidual = nullptr) const;

 private:
  ParamAndGradBuffer& buf_;
  ParamAndGradBuffer::Id w_, b_;
  int hidden_;
  float eps_;
};

}  // namespace mt
