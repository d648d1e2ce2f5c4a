#pragma once
// `megatron convert --from megatron-lm`: a Megatron-LM checkpoint (megatron_lm_import.h) into our
// native checkpoint, one tensor at a time (CheckpointStreamWriter), every tensor of the source
// accounted for before anything is written; and `megatron train --load` of one, straight into the
// model's buffers.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/megatron_lm_import.h"
#include "model/param_buffer.h"

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

// `megatron train --load` of a Megatron-LM checkpoint: copies into `buf` this rank's part of every
// parameter it holds (tensor-parallel shards, its pipeline stages' layers, the last stage's copy of
// tied word embeddings) from `in`, whose architecture the model's is; vocabulary padding rows past
// the checkpoint's are zero. Every rank reads the whole tensors it needs. Returns the bytes read.
uint64_t load_megatron_lm_weights_into(const MegatronLmCheckpoint& in, ParamAndGradBuffer& buf);

}  // namespace mt
