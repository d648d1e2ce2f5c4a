#pragma once
// Reassembling tensor-parallel parameters: a shard's ParamInfo records its global shape and
// slice, so the full tensor can be gathered for comparison, export or resharding.
#include "comm/communicator.h"
#include "model/param_buffer.h"

namespace mt {

// The full (global-shape) parameter as an fp32 CPU tensor; collective over `tp` for sharded
// parameters (every tp rank must call it), a local copy for replicated ones.
Tensor gather_full_parameter(const ParamAndGradBuffer& buf, ParamAndGradBuffer::Id id, Communicator* tp);

}  // namespace mt
