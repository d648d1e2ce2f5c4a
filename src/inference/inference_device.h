#pragma once
// The device `megatron generate` and `megatron serve` run the model on, from --device: cpu,
// cuda (UserError when there is no GPU) or auto (the GPU when there is one). With several
// processes on a node, each takes the GPU of its local rank (one process per GPU).
#include <string>

#include "core/tensor.h"

namespace mt {

Device inference_device(const std::string& name);

}  // namespace mt
