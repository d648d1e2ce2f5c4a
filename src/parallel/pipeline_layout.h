#pragma once
// Which layers each pipeline stage holds (Megatron-Core's pipeline layer layout). With P
// pipeline ranks and V virtual stages per rank there are S = P V stages; stage s runs on rank
// s % P as its model chunk s / P. The embedding is in stage 0, the final norm, output layer and
// loss in stage S - 1, and the decoder layers in order:
//   - evenly: num_layers / S each (num_layers must divide);
//   - --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers (V = 1): the
//     first / last stage takes that many, the others split the rest evenly;
//   - --pipeline-model-parallel-layout: Megatron's string, stages separated by '|', 'E' the
//     embedding, 't' a decoder layer, 'L' the loss, "X*n" repeats X, parentheses group,
//     commas and spaces are ignored; e.g. "Et*3|(tt|)*29,m|L" (an 'm', a multi-token
//     prediction layer, is not supported). Its stage count sets V = S / P.
#include <string>
#include <vector>

#include "model/gpt_model.h"

namespace mt {

struct PipelineLayoutArgs {
  int num_layers = 1;
  int pipeline_size = 1;
  int virtual_stages = 1;                // --num-virtual-stages-per-pipeline-rank (or derived)
  int layers_per_virtual_stage = 0;      // --num-layers-per-virtual-pipeline-stage (0: unset)
  int first_stage_layers = -1;           // --decoder-first-pipeline-num-layers (-1: unset)
  int last_stage_layers = -1;            // --decoder-last-pipeline-num-layers
  std::string layout;                    // --pipeline-model-parallel-layout
};

// The S stages' chunks in stage order. Throws ArgumentError naming the flag and what is expected.
std::vector<ModelChunkConfig> plan_pipeline_stages(const PipelineLayoutArgs& a);

// Megatron's layout string as one string per stage ("Ettt", "tt", "L"); ArgumentError when malformed.
std::vector<std::string> parse_pipeline_layout(const std::string& layout);

// "stage 0: embedding + layers 0-2 | stage 1: layers 3-4 | ..." for the start-up log.
std::string describe_pipeline_stages(const std::vector<ModelChunkConfig>& stages);

}  // namespace mt
