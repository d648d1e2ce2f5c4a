#pragma once
// One pre-LayerNorm GPT block:
//   x1 = x  + dropout(attn(ln1(x)))
//   y  = x1 + dropout(mlp(ln2(x1)))
#include <string>

#include "model/attention.h"
#include "model/layernorm.h"
#include "model/mlp.h"

namespace mt {

class TransformerLayer {
 public:
  struct Saved {
    LayerNorm::Saved ln1, ln2;
    SelfAttention::Saved attn;
    MLP::Saved mlp;
    float dropout_p = 0.0f;
    uint64_t seed = 0, attn_drop_stream = 0, mlp_drop_stream = 0;
  };
  TransformerLayer(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg, int layer_number,
                   const ModelParallelConfig& par = {});
  void init(uint64_t seed) const;
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;

 private:
  GPTConfig cfg_;
  int layer_number_;
  LayerNorm ln1_;
  SelfAttention attn_;
  LayerNorm ln2_;
  MLP mlp_;
};

}  // namespace mt
