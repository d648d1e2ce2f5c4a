#pragma once
// Tensor-parallel linear layers (Megatron-Core's names) and the communication around them.
//
// ColumnParallelLinear: W [out, in] split by rows (output features): rank r holds rows
//   [r out/tp, (r+1) out/tp) and its bias slice. Input: replicated [N, in] (or, with sequence
//   parallelism, this rank's tokens [N/tp, in], all-gathered first). Output: [N, out/tp].
//   Backward all-reduces dx over TP (reduce-scatters it with sequence parallelism); with
//   par.async_tp_allreduce that collective runs while the weight-gradient GEMM computes. With
//   par.tp_comm_overlap the forward's all-gather overlaps the GEMM block by block.
// RowParallelLinear: W [out, in] split by columns (input features): rank r holds columns
//   [r in/tp, (r+1) in/tp); the bias is replicated. Input: [N, in/tp]. Output: the partial
//   products all-reduced (reduce-scattered to [N/tp, out] with sequence parallelism); the bias
//   is added once (by tp rank 0, before the reduction). With sequence parallelism backward
//   all-gathers dy first (block by block under the dgrad GEMM with par.tp_comm_overlap, which
//   also reduces the forward's output block by block under its GEMM).
// With TP = 1 both are the plain linear layer y = x W^T + b (W [out, in]).
//
// Activations are epilogues of the GEMMs, not layers of their own (gemm.h's gemm_bias_gelu /
// gemm_dgelu): a column-parallel forward with Epilogue::Gelu returns gelu(x W^T + b) and keeps the
// pre-activation; the next row-parallel layer's backward, given that InputEpilogue, returns
// dx * gelu'(pre) and adds the first layer's bias gradient, so its backward then skips its own.
//
// Sequence parallelism splits the flattened token dimension (row-major [B, T] tokens) into TP
// contiguous chunks; every op outside the tensor-parallel regions is per token, so any
// contiguous split works, and an all-gather restores the full [N, C] in order.
#include <functional>
#include <string>

#include "model/init_method.h"
#include "model/param_buffer.h"
#include "model/parallel_config.h"

namespace mt {

// Token-dimension collectives of sequence parallelism (x: [n, C] contiguous).
Tensor gather_tokens(const Tensor& x, Communicator& tp);          // [n, C] -> [tp n, C]
Tensor reduce_scatter_tokens(const Tensor& x, Communicator& tp);  // [tp n, C] -> [n, C], summed
// gather_tokens into out ([tp n, C]) as one broadcast per rank's block of rows, calling
// use(first_row, rows) for each block as soon as it is present: this rank's own block first (no
// communication), then the others; on GPUs the broadcasts run on a side stream meanwhile.
void gather_tokens_blockwise(const Tensor& x, const Tensor& out, Communicator& tp,
                             const std::function<void(int64_t, int64_t)>& use);

// What follows a linear layer's bias in its forward GEMM (none: y = x W^T (+ b)).
enum class Epilogue : uint8_t { None, Gelu };

class ColumnParallelLinear {
 public:
  struct Saved {
    Tensor x;  // the full (gathered) input
  };
  // parts > 1: the output features are `parts` stacked blocks (the gated MLP's [gate | up]), each
  // split over TP, so that every rank's output is [its share of part 0 | of part 1 | ..].
  ColumnParallelLinear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out,
                       const ModelParallelConfig& par, bool bias = true, int parts = 1);
  void init(float std, uint64_t seed) const;
  // -> epilogue(x W^T + b) [N, out/tp]; with an epilogue, x W^T + b itself goes to *pre.
  Tensor forward(const Tensor& x, Saved& saved, Epilogue epilogue = Epilogue::None, Tensor* pre = nullptr) const;
  // -> dx like forward's x; accumulates dW, and db unless `bias_grad` is false.
  Tensor backward(const Tensor& dy, Saved& saved, bool bias_grad = true) const;
  // Recomputation: saves x as forward would have (gathered over TP under sequence parallelism),
  // without the GEMM, when the input was dropped after forward and has been recomputed.
  void restore_input(const Tensor& x, Saved& saved) const;
  int out_local() const { return out_; }
  Tensor bias_grad() const;  // the bias's main grad [out/tp] (undefined without a bias)

 private:
  // Sets saved.x to x as [N, in] (gathered with sequence parallelism) and calls rows(first, count)
  // over it: once for all rows, or per TP rank's block as it arrives (--tp-comm-overlap).
  void for_input_rows(const Tensor& x, Saved& saved, const std::function<void(int64_t, int64_t)>& rows) const;
  int64_t input_rows(const Tensor& x) const;  // N
  Tensor weight() const;       // [out/tp, in], whatever the parts
  Tensor weight_grad() const;  // its main grad
  Tensor bias() const;         // [out/tp]

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
  // The epilogue of the layer that produced this one's input: pre is its input ([N, in/tp]);
  // db_accum (may be undefined) receives the column sums of the returned dx * act'(pre).
  struct InputEpilogue {
    Epilogue epilogue = Epilogue::None;
    Tensor pre, db_accum;
  };
  Tensor forward(const Tensor& x, Saved& saved) const;    // [N, in/tp] -> [N, out] (or [N/tp, out])
  // -> dx [N, in/tp], or dx * act'(input->pre) given an input epilogue.
  Tensor backward(const Tensor& dy, Saved& saved, const InputEpilogue* input = nullptr) const;

 private:
  ParamAndGradBuffer& buf_;
  ModelParallelConfig par_;
  ParamAndGradBuffer::Id w_, b_ = -1;
  int in_, out_;
};

}  // namespace mt
