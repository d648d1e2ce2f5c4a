#pragma once
// `megatron convert --from megatron-lm`: a Megatron-LM checkpoint (megatron_lm_import.h) into our
// native checkpoint, one tensor at a time (CheckpointStreamWriter), every tensor of the source
// accounted for before the checkpoint is completed.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/megatron_lm_import.h"

namespace mt {

struct MegatronLmConvertStats {
  uint64_t bytes_read = 0, bytes_written = 0;
  int64_t tensors = 0;
};

// IN -> OUT_DIR/iter_0000000 with common.json `common`; tensors keep their stored dtype unless
// `dtype` is given.
MegatronLmConvertStats convert_megatron_lm_to_checkpoint(const MegatronLmCheckpoint& in, const std::string& out_dir,
                                                         const nlohmann::json& common, const CheckpointLayout& layout,
                                                         std::optional<DType> dtype = std::nullopt);

}  // namespace mt
