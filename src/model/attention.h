#pragma once
// SelfAttention (Megatron-Core's name): linear_qkv -> causal core attention -> linear_proj.
// linear_qkv's output features are ordered [head, {q,k,v}, head_dim] (Megatron's layout).
#include <string>

#include "kernels/attention.h"
#include "model/config.h"
#include "model/linear.h"

namespace mt {

class SelfAttention {
 public:
  struct Saved {
    Linear::Saved qkv_in, proj_in;
    Tensor qkv, out, lse;
    AttentionConfig core;
  };
  SelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg);
  void init(float std, float out_std, uint64_t seed) const;
  // x: [B, T, C] -> [B, T, C]
  Tensor forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;

 private:
  GPTConfig cfg_;
  Linear qkv_, proj_;
};

}  // namespace mt
