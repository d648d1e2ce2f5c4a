#pragma once
// SelfAttention (Megatron-Core's name): linear_qkv -> causal core attention -> linear_proj.
// linear_qkv's output features are ordered [head, {q,k,v}, head_dim] (Megatron's layout), so its
// column-parallel split gives each tensor-parallel rank whole heads (heads / TP of them);
// linear_proj is row-parallel over the same heads.
#include <string>

#include "kernels/attention.h"
#include "model/config.h"
#include "model/tensor_parallel.h"

namespace mt {

class SelfAttention {
 public:
  struct Saved {
    ColumnParallelLinear::Saved qkv_in;
    RowParallelLinear::Saved proj_in;
    Tensor qkv, out, lse;
    AttentionConfig core;
  };
  SelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg,
                const ModelParallelConfig& par = {});
  void init(float std, float out_std, uint64_t seed) const;
  // x: [B, T, C] (with sequence parallelism this rank's tokens, [B T / TP, C]) -> same shape
  Tensor forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;

 private:
  GPTConfig cfg_;
  int heads_;  // local: num_attention_heads / TP
  ColumnParallelLinear qkv_;
  RowParallelLinear proj_;
};

}  // namespace mt
