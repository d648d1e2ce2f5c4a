#pragma once
// MLP: linear_fc1 (h -> ffn, column-parallel) -> GeLU -> linear_fc2 (ffn -> h, row-parallel).
#include <string>

#include "model/config.h"
#include "model/tensor_parallel.h"

namespace mt {

class MLP {
 public:
  struct Saved {
    ColumnParallelLinear::Saved fc1_in;
    RowParallelLinear::Saved fc2_in;  // gelu(pre); empty with recompute_gelu (recomputed in backward)
    Tensor pre_act;  // fc1 output, input of GeLU
  };
  // recompute_gelu: keep only fc1's output and recompute GeLU in backward (the layer's share of
  // --recompute-gelu, see GPTConfig::layer_recomputes_gelu).
  MLP(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg, const ModelParallelConfig& par = {},
      bool recompute_gelu = false);
  void init(float std, float out_std, uint64_t seed) const;
  Tensor forward(const Tensor& x, Saved& saved) const;   // [B, T, C] -> [B, T, C]
  Tensor backward(const Tensor& dy, Saved& saved) const;

 private:
  GPTConfig cfg_;
  bool recompute_gelu_ = false;
  ColumnParallelLinear fc1_;
  RowParallelLinear fc2_;
};

}  // namespace mt
