#pragma once
// GroupedMLP (Megatron-Core's name): this rank's experts, each an MLP (gated SwiGLU, or GeLU),
// run over the rows the dispatcher grouped by expert with one grouped GEMM per projection.
// Expert g's weights are `mlp.experts.local_experts.<g>.linear_fc1.weight` ([gate | up] like the
// dense gated MLP's) and `.linear_fc2.weight`, named by the global expert index so that a
// checkpoint reshards across expert-parallel sizes. With tensor parallelism each expert is split
// like the dense MLP (fc1 by output features, fc2 by input features) and its output is a partial
// sum over TP ranks, reduced by the MoE layer after the combine. They live in the expert
// ParamAndGradBuffer (reduced over the expert-data-parallel group); the local experts' fc1
// weights are contiguous there, then their fc2 weights, so each projection is one [G, N, K] view.
#include <cstdint>
#include <string>
#include <vector>

#include "model/param_buffer.h"
#include "model/parallel_config.h"
#include "model/transformer_config.h"

namespace mt {

class GroupedMLP {
 public:
  struct Saved {
    std::vector<int64_t> counts;  // rows per local expert
    Tensor x, pre, act;           // fc1's input, its output, the activation (fc2's input)
  };
  GroupedMLP(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg, int first_expert,
             int num_local_experts, const ModelParallelConfig& par);
  void init(float std, float out_std, uint64_t seed) const;
  // x [M, C] grouped by local expert (counts) -> [M, C], a partial sum over TP.
  Tensor forward(const Tensor& x, const std::vector<int64_t>& counts, Saved& saved) const;
  // -> dx [M, C], a partial sum over TP; accumulates the weight gradients; frees saved.
  Tensor backward(const Tensor& dy, Saved& saved) const;
  // Registration ids of this rank's expert weights [first, end) in the buffer.
  int first_id() const { return fc1_.front(); }
  int end_id() const { return fc2_.back() + 1; }

 private:
  Tensor stacked(const std::vector<ParamAndGradBuffer::Id>& ids, bool grad, int64_t rows, int64_t cols) const;

  ParamAndGradBuffer& buf_;
  bool gated_;
  bool recompute_act_;  // --recompute-modules moe_act: act is dropped after forward, rerun from pre
  int hidden_, ffn_local_;  // C, F / TP
  std::vector<ParamAndGradBuffer::Id> fc1_, fc2_;
};

}  // namespace mt
