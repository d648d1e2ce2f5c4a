#pragma once
// MLP: linear_fc1 (h -> ffn) -> GeLU -> linear_fc2 (ffn -> h).
#include <string>

#include "model/config.h"
#include "model/linear.h"

namespace mt {

class MLP {
 public:
  struct Saved {
    Linear::Saved fc1_in, fc2_in;
    Tensor pre_act;  // fc1 output, input of GeLU
  };
  MLP(ParamAndGradBuffer& buf, const std::string& prefix, const GPTConfig& cfg);
  void init(float std, float out_std, uint64_t seed) const;
  Tensor forward(const Tensor& x, Saved& saved) const;   // [B, T, C] -> [B, T, C]
  Tensor backward(const Tensor& dy, Saved& saved) const;

 private:
  GPTConfig cfg_;
  Linear fc1_, fc2_;
};

}  // namespace mt
