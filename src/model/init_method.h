#pragma once
// Megatron's init_method for the parameters in a ParamAndGradBuffer.
#include <cstdint>

#include "model/param_buffer.h"

namespace mt {

// N(0, std) init of a named parameter, drawn from Philox stream "init/<name>" so the values
// depend on the name and seed only, never on the layout or thread count (a tensor-parallel
// shard draws the numbers of the global element indices it holds).
void init_normal(const ParamAndGradBuffer& buf, ParamAndGradBuffer::Id id, float std, uint64_t seed);

}  // namespace mt
