#pragma once
// --log-params-norm: the L2 norm of the model's parameters, each counted once (tensor-parallel
// replicas on tp rank 0, the tied embedding on the stage that owns it), over the model-parallel
// group (the experts over the expert model-parallel group); the same on every rank.
#include "comm/process_groups.h"
#include "model/param_buffer.h"

namespace mt {

double params_norm(const ParamAndGradBuffer& dense, const ParamAndGradBuffer* experts, ProcessGroups& groups);

}  // namespace mt
