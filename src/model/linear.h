#pragma once
// Linear layer y = x W^T + b with W [out, in] (PyTorch/Megatron layout). The tensor-parallel
// variants (ColumnParallelLinear, RowParallelLinear) wrap this with communication.
#include <string>

#include "model/param_buffer.h"

namespace mt {

class Linear {
 public:
  struct Saved {
    Tensor x;
  };
  Linear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out, bool bias = true);
  // weight ~ N(0, std) keyed by the parameter's name; bias 0.
  void init(float std, uint64_t seed) const;
  // x: [N, in] -> [N, out]
  Tensor forward(const Tensor& x, Saved& saved) const;
  // Accumulates dW (+ db) into main grads; returns dx [N, in]. Releases saved.
  Tensor backward(const Tensor& dy, Saved& saved) const;

  Tensor weight() const { return buf_.param(w_); }

 private:
  ParamAndGradBuffer& buf_;
  ParamAndGradBuffer::Id w_, b_ = -1;
  int in_, out_;
};

// N(0, std) init of a named parameter, drawn from Philox stream "init/<name>" so the values
// depend on the name and seed only, never on the layout or thread count (a tensor-parallel
// shard draws the numbers of the global element indices it holds).
void init_normal(const ParamAndGradBuffer& buf, ParamAndGradBuffer::Id id, float std, uint64_t seed);

}  // namespace mt
