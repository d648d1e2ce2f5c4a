#pragma once
// pretrain_gpt: the training loop. Builds the model, data, optimizer and schedule from the
// arguments, then per iteration runs num_microbatches forward/backward passes accumulating into
// the main grads, one optimizer step, and logs/evaluates on Megatron's intervals.
#include <cstdio>
#include <vector>

#include "train/arguments.h"

namespace mt {

struct TrainResult {
  std::vector<double> train_losses;  // per iteration, mean over the global batch
  std::vector<double> valid_losses;  // per evaluation
  int64_t iterations = 0;
};

TrainResult pretrain_gpt(const TrainingArgs& args, std::FILE* log = stdout);

}  // namespace mt
