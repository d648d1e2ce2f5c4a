#pragma once
// Process groups (Megatron-Core's parallel_state): world rank -> (tp, cp, dp, pp) coordinates in
// Megatron's default order tp-cp-ep-dp-pp, tp varying fastest:
//   rank = tp + TP * (cp + CP * (dp + DP * pp)),   DP = world / (TP * CP * PP).
// Expert parallelism splits the data-parallel ranks (Megatron's): dp = ep + EP * edp, so the EP
// ranks of an expert layer are consecutive data-parallel ranks, and an expert's replicas are the
// expert-data-parallel group (same tp, cp, ep, pp; size DP / EP). The dense layers are replicated
// over all DP ranks. Each rank belongs to one group per dimension and to the combined groups
// Megatron uses: model-parallel (tp-pp), expert-model-parallel (tp-ep-pp, over which the expert
// gradients' norm is summed), tp-dp, dp-cp (the gradient reduction group with context
// parallelism) and the embedding group (first and last pipeline stage; null on the stages between).
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace mt {

struct ParallelSizes {
  int tp = 1, cp = 1, ep = 1, pp = 1;
};

struct RankCoords {
  int tp = 0, cp = 0, ep = 0, dp = 0, pp = 0;  // ep = dp % EP
};

// Pure functions of the layout (no communication), for groups, tests and messages.
struct ParallelLayout {
  ParallelSizes sizes;
  int dp = 1;         // data parallel: world / (TP * CP * PP)
  int expert_dp = 1;  // expert data parallel: DP / EP
  int world = 1;
  // Throws UserError naming the problem when world is not a multiple of TP*CP*EP*PP.
  static ParallelLayout make(const ParallelSizes& s, int world);
  RankCoords coords(int rank) const;
  int rank_of(const RankCoords& c) const;
};

class ProcessGroups {
 public:
  // Collective over `world` (every rank calls it with the same sizes).
  ProcessGroups(std::unique_ptr<Communicator> world, const ParallelSizes& sizes);

  const ParallelLayout& layout() const { return layout_; }
  const RankCoords& coords() const { return coords_; }
  int rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  bool is_first_rank() const { return world_->rank() == 0; }
  bool is_last_rank() const { return world_->rank() == world_->size() - 1; }

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& cp() const { return *cp_; }
  Communicator& ep() const { return *ep_; }
  Communicator& dp() const { return *dp_; }                 // the dense layers' data parallelism
  Communicator& expert_dp() const { return *expert_dp_; }   // an expert's replicas
  Communicator& expert_mp() const { return *expert_mp_; }   // tp x ep x pp
  Communicator& pp() const { return *pp_; }
  Communicator& mp() const { return *mp_; }       // model parallel: tp x pp
  Communicator& tp_dp() const { return *tp_dp_; }
  Communicator& dp_cp() const { return *dp_cp_; }
  Communicator* embedding() const { return embd_.get(); }  // null off the first/last stage

 private:
  ParallelLayout layout_;
  RankCoords coords_;
  std::unique_ptr<Communicator> world_, tp_, cp_, ep_, dp_, expert_dp_, pp_, mp_, expert_mp_, tp_dp_, dp_cp_, embd_;
};

}  // namespace mt
