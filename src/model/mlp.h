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
    RowParallelLinear::Saved fc2_in;  // gelu(pre); empty with cfg.recompute_gelu (recomputed in backward)
    Tensor pre_act;  // fc1 output, input of GeLU
  };
  MLP(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg, const ModelParallelConfig& par = {});
  void init(float std, float out_std, uint64_t seed) const;
  Tensor forward(const Tensor& x, Saved& saved) const;   // [B, T, C] -> [B, T, C]
  Tensor backward(const Tensor& dy, Saved& saved) const;

 private:
  GPTConfig cfg_;
  ColumnParallelLinear fc1_;
  RowParallelLinear fc2_;
};

}  // namespace mt
