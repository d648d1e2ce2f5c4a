#pragma once
// How a model chunk is laid out across ranks: the tensor-parallel group its parallel layers
// communicate over, sequence parallelism, and the bucketing of its ParamAndGradBuffer for
// data-parallel reduction. The default is one rank holding everything.
#include <cstdint>

#include "comm/communicator.h"

namespace mt {

// Context parallelism's exchange around core attention (--cp-comm-type): p2p passes key/value
// blocks around the ring of context-parallel ranks (ring attention), a2a exchanges tokens for
// heads with an all-to-all before attention and back after it (Ulysses).
enum class CpCommType : uint8_t { P2P, A2A };

struct ModelParallelConfig {
  Communicator* tp = nullptr;      // null or size 1: no tensor parallelism
  Communicator* cp = nullptr;      // null or size 1: no context parallelism
  CpCommType cp_comm_type = CpCommType::P2P;
  Communicator* ep = nullptr;      // MoE layers' expert-parallel group (null or size 1: all experts local)
  Communicator* dp = nullptr;      // MoE global_aux_loss: the data-parallel group whose token counts it sums
  bool sequence_parallel = false;  // tokens split across tp ranks outside the tp regions
  // Column-parallel backward: start the input gradient's TP all-reduce (reduce-scatter with
  // sequence parallelism) asynchronously and compute the weight gradient meanwhile
  // (--async-tensor-model-parallel-allreduce). Same arithmetic, so the same results.
  bool async_tp_allreduce = false;
  // With sequence parallelism (--tp-comm-overlap): the all-gathers before the column-parallel
  // GEMMs (forward) and the row-parallel dgrad GEMMs (backward) arrive as one broadcast per TP
  // rank's block of tokens, and each block's GEMM runs as soon as its block is present; the
  // row-parallel forward's reduce-scatter leaves as one reduce per block as soon as that
  // block's GEMM is done; implies async_tp_allreduce. Same products row by row.
  bool tp_comm_overlap = false;
  int64_t bucket_size = 0;         // ParamAndGradBuffer::set_bucketing (0: one bucket)
  int64_t bucket_pad = 16;
  int64_t expert_bucket_pad = 16;  // the expert buffer's (its data-parallel group is expert-dp)

  int tp_size() const { return tp ? tp->size() : 1; }
  int tp_rank() const { return tp ? tp->rank() : 0; }
  int cp_size() const { return cp ? cp->size() : 1; }
  int cp_rank() const { return cp ? cp->rank() : 0; }
};

}  // namespace mt
