#pragma once
// MoEAlltoAllTokenDispatcher (Megatron-Core's name): takes a microbatch's tokens to the experts
// that hold their choices and their outputs back.
//
// dispatch: the routing plan (host) -> permute the tokens into rows sorted by expert -> with
// expert parallelism (EP ranks, E / EP consecutive experts each), exchange the number of rows per
// (rank, expert) first, so that every buffer is sized exactly, then the rows themselves
// (all_to_all_v) -> regroup the received rows by local expert (from every source rank, in rank
// order). combine reverses each step and sums each token's expert outputs weighted by its
// routing probabilities. Backward passes run the same steps the other way. An expert that gets
// no rows costs nothing and blocks nobody: every rank takes part in every exchange.
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "model/moe_routing_plan.h"
#include "model/transformer_config.h"

namespace mt {

// The interface both dispatchers share (Megatron-Core's MoETokenDispatcher).
class MoETokenDispatcher {
 public:
  struct Saved {
    int64_t tokens = 0;
    Tensor row_map, row_source;  // int32 on the tokens' device (alltoall: this rank's slots; allgather: the group's)
    Tensor probs;                // fp32 [T, k] on the tokens' device (allgather: the group's [P T, k])
    std::vector<int64_t> rows_per_local_expert;
    Tensor expert_output;  // combine's input (alltoall: this rank's rows back from the experts)
    // alltoall with expert parallelism: rows sent to / received from each EP rank, and the
    // regrouping of the received rows by local expert (int32 permutations on the device).
    std::vector<int64_t> send_rows, recv_rows;
    Tensor regroup, ungroup;
  };
  // ep: the expert-parallel group (null or size 1: every expert is local).
  MoETokenDispatcher(const TransformerConfig& cfg, Communicator* ep);
  virtual ~MoETokenDispatcher() = default;
  int num_local_experts() const { return local_experts_; }
  int first_local_expert() const { return first_expert_; }

  // x [T, C]; probs, indices: the router's [T, k] (host). -> the local experts' input rows
  // [M, C], grouped by local expert (saved.rows_per_local_expert).
  virtual Tensor dispatch(const Tensor& x, const std::vector<int32_t>& indices, const std::vector<float>& probs,
                          Saved& saved) const = 0;
  // The local experts' output [M, C] -> [T, C]: each token's outputs summed with its probabilities.
  virtual Tensor combine(const Tensor& expert_output, Saved& saved) const = 0;
  // d combine's output [T, C] -> d expert output [M, C] (returned) and the probabilities'
  // gradient fp32 [T, k] on the device (dprobs).
  virtual Tensor combine_backward(const Tensor& dout, Saved& saved, Tensor& dprobs) const = 0;
  // d expert input [M, C] -> d x [T, C]; frees saved.
  virtual Tensor dispatch_backward(const Tensor& dinput, Saved& saved) const = 0;

 protected:
  TransformerConfig cfg_;
  Communicator* ep_;
  int ep_size_ = 1, local_experts_ = 0, first_expert_ = 0;
};

class MoEAlltoAllTokenDispatcher final : public MoETokenDispatcher {
 public:
  using MoETokenDispatcher::MoETokenDispatcher;
  Tensor dispatch(const Tensor& x, const std::vector<int32_t>& indices, const std::vector<float>& probs,
                  Saved& saved) const override;
  Tensor combine(const Tensor& expert_output, Saved& saved) const override;
  Tensor combine_backward(const Tensor& dout, Saved& saved, Tensor& dprobs) const override;
  Tensor dispatch_backward(const Tensor& dinput, Saved& saved) const override;

 private:
  // Rows grouped by global expert on this rank <-> rows grouped by local expert on their owners.
  Tensor to_experts(const Tensor& rows, const Saved& s) const;
  Tensor from_experts(const Tensor& rows, const Saved& s) const;
};

// MoEAllGatherTokenDispatcher (--moe-token-dispatcher-type allgather): every EP rank gathers the
// group's tokens and routing, runs its experts on the rows routed to them (each source rank's
// plan, so capacity drops the same tokens as alltoall), and the partial outputs are summed back
// to the tokens' ranks by a reduce-scatter; backward all-gathers the output gradient and
// reduce-scatters the input and probability gradients. More traffic than alltoall for few
// experts per token, no count exchange.
class MoEAllGatherTokenDispatcher final : public MoETokenDispatcher {
 public:
  using MoETokenDispatcher::MoETokenDispatcher;
  Tensor dispatch(const Tensor& x, const std::vector<int32_t>& indices, const std::vector<float>& probs,
                  Saved& saved) const override;
  Tensor combine(const Tensor& expert_output, Saved& saved) const override;
  Tensor combine_backward(const Tensor& dout, Saved& saved, Tensor& dprobs) const override;
  Tensor dispatch_backward(const Tensor& dinput, Saved& saved) const override;

 private:
  Tensor gather(const Tensor& t) const;          // [n, ..] -> [P n, ..] over EP
  Tensor reduce_scatter(const Tensor& t) const;  // [P n, ..] -> [n, ..], summed over EP
};

// The config's dispatcher.
std::unique_ptr<MoETokenDispatcher> make_token_dispatcher(const TransformerConfig& cfg, Communicator* ep);

}  // namespace mt
