#pragma once
// Tensor-parallel linear layers (Megatron-Core's names) and the communication around them.
//
// ColumnParallelLinear: W [out, in] split by rows (output features): rank r holds rows
//   [r out/tp, (r+1) out/tp) and its bias slice. Input: replicated [N, in] (or, with sequence
//   parallelism, this rank's tokens [N/tp, in], all-gathered first). Output: [N, out/tp].
//   Backward all-reduces dx over TP (reduce-scatters it with sequence parallelism).
// RowParallelLinear: W [out, in] split by columns (input features): rank r holds columns
//   [r in/tp, (r+1) in/tp); the bias is replicated. Input: [N, in/tp]. Output: the partial
//   products all-reduced (reduce-scattered to [N/tp, out] with sequence parallelism); the bias
//   is added once (by tp rank 0, before the reduction).
// With TP = 1 both are exactly Linear (same kernel calls in the same order).
//
// Sequence parallelism splits the flattened token dimension (row-major [B, T] tokens) into TP
// contiguous chunks; every op outside the tensor-parallel regions is per token, so any
// contiguous split works, and an all-gather restores the full [N, C] in order.
#include <string>

#include "model/linear.h"
#include "model/parallel_config.h"

namespace mt {

// Token-dimension collectives of sequence parallelism (x: [n, C] contiguous).
Tensor gather_tokens(const Tensor& x, Communicator& tp);          // [n, C] -> [tp n, C]
Tensor reduce_scatter_tokens(const Tensor& x, Communicator& tp);  // [tp n, C] -> [n, C], summed

class ColumnParallelLinear {
 public:
  struct Saved {
    Tensor x;  // the full (gathered) input
  };
  ColumnParallelLinear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out,
                       const ModelParallelConfig& par, bool bias = true);
  void init(float std, uint64_t seed) const;
  Tensor forward(const Tensor& x, Saved& saved) const;   // -> [N, out/tp]
  Tensor backward(const Tensor& dy, Saved& saved) const;  // -> dx like forward's x
  int out_local() const { return out_; }

 private:
  ParamAndGradBuffer& buf_;
  ModelParallelConfig par_;
  ParamAndGradBuffer::Id w_, b_ = -1;
  int in_, out_;
};

class RowParallelLinear {
 public:
  struct Saved {
    Tensor x;
  };
  RowParallelLinear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out, const ModelParallelConfig& par,
                    bool bias = true);
  void init(float std, uint64_t seed) const;
  Tensor forward(const Tensor& x, Saved& saved) const;    // [N, in/tp] -> [N, out] (or [N/tp, out])
  Tensor backward(const Tensor& dy, Saved& saved) const;  // -> [N, in/tp]

 private:
  ParamAndGradBuffer& buf_;
  ModelParallelConfig par_;
  ParamAndGradBuffer::Id w_, b_ = -1;
  int in_, out_;
};

}  // namespace mt
