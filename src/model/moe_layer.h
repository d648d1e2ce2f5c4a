#pragma once
// MoELayer (Megatron-Core's name): the MLP slot of an MoE transformer layer.
//   tokens -> TopKRouter -> dispatcher (permute, expert-parallel exchange) -> GroupedMLP
//          -> dispatcher combine (probabilities applied) [+ shared experts' MLP]
// Tensor parallelism (expert tensor parallel size = TP): every TP rank routes the whole
// microbatch (gathered first under sequence parallelism), its experts hold 1/TP of each expert,
// and the combined output's partial sums are reduced once (all-reduce, or reduce-scatter back to
// the sequence-parallel shards). The router's input gradient is the same on every TP rank and is
// added after that reduction; the routing probabilities' gradient, a partial sum, is all-reduced
// before the router's backward.
#include <memory>
#include <string>

#include "model/mlp.h"
#include "model/moe_experts.h"
#include "model/moe_router.h"
#include "model/moe_token_dispatcher.h"

namespace mt {

class MoELayer {
 public:
  struct Saved {
    TopKRouter::Saved router;
    MoETokenDispatcher::Saved dispatcher;
    GroupedMLP::Saved experts;
    MLP::Saved shared;
    Shape shape;
    // Recomputation (--recompute-modules moe / shared_experts): the layer's input, and the
    // forward's context with its metrics sink removed (a rerun must not count twice).
    Tensor x;
    ForwardContext ctx;
  };
  // buf: the dense buffer (router, shared experts); expert_buf: the experts' weights.
  MoELayer(ParamAndGradBuffer& buf, ParamAndGradBuffer& expert_buf, const std::string& prefix,
           const TransformerConfig& cfg, int layer_number, const ModelParallelConfig& par);
  void init(float std, float out_std, uint64_t seed) const;
  // x [B, T, C] (or this rank's sequence-parallel rows) -> the same shape. ctx.seq: the
  // sequence length (seq_aux_loss).
  Tensor forward(const Tensor& x, const ForwardContext& ctx, Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;
  // Selective recomputation of the layernorm before it: every saved reference to the input
  // (the router's, the shared experts', the kept input) is dropped, and put back before backward.
  void drop_input(Saved& saved) const;
  void restore_input(const Tensor& x, Saved& saved) const;
  const TopKRouter& router() const { return router_; }
  const GroupedMLP& experts() const { return experts_; }

 private:
  TransformerConfig cfg_;
  ModelParallelConfig par_;
  TopKRouter router_;
  std::unique_ptr<MoETokenDispatcher> dispatcher_;
  GroupedMLP experts_;
  std::unique_ptr<MLP> shared_;
  bool recompute_moe_, recompute_shared_;

  Tensor forward_routed(const Tensor& x, const ForwardContext& ctx, Saved& saved) const;
};

}  // namespace mt
