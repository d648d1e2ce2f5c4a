#pragma once
// pretrain_gpt: the training loop. Builds the model, data, optimizer and schedule from the
// arguments, then per iteration runs num_microbatches forward/backward passes accumulating into
// the main grads, one optimizer step, and logs/evaluates on Megatron's intervals.
//
// Distributed: under mpirun every rank runs this with the same arguments. The layout comes from
// the tensor/pipeline/context/expert sizes, data parallelism from the rest of the world. Each
// data-parallel rank reads its share of every global batch (Megatron's
// MegatronPretrainingSampler order), grads are reduced over DP bucket by bucket (reduce-scatter
// with the distributed optimizer), the loss is averaged over DP; setup lines are printed by
// rank 0 and the iteration line by the last rank.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "train/arguments.h"

namespace mt {

class ProcessGroups;

struct TrainResult {
  std::vector<double> train_losses;  // per iteration, mean over the global batch
  std::vector<double> valid_losses;  // per evaluation
  std::vector<double> grad_norms;    // per iteration (0 when skipped)
  int64_t iterations = 0;
  // Rank 0's memory: the report's predicted peak and the measured peak of tensors on the
  // model's device (train/memory_report.h), in bytes.
  int64_t predicted_peak_bytes = 0, measured_peak_bytes = 0;
  // With TrainOptions::return_final_params: every parameter after training, gathered across
  // tensor parallelism to its global shape (fp32, row-major), by global name.
  std::map<std::string, std::vector<float>> final_params;
  std::map<std::string, std::vector<int64_t>> final_param_shapes;
};

struct TrainOptions {
  ProcessGroups* groups = nullptr;  // null: built from the MPI world (or this process alone)
  bool return_final_params = false;
};

TrainResult pretrain_gpt(const TrainingArgs& args, std::FILE* log = stdout, const TrainOptions& opts = {});

}  // namespace mt
