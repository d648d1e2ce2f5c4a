#pragma once
// A run's metrics beyond the log line, written by the last rank (where Megatron writes them):
//  - TensorBoard scalars (--tensorboard-dir) under Megatron's tag names and steps
//    (megatron/training/training.py: training_log, evaluate_and_print_results): each at the
//    iteration and, as "<tag> vs samples", at the consumed samples;
//  - JSON lines (--log-jsonl FILE, ours): one object per log line and per validation, with the
//    log line's values, appended and flushed as they come, for scripts.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "train/arguments.h"
#include "train/log_line.h"

namespace mt {

class EventFileWriter;

// --tensorboard-log-interval and --tensorboard-queue-size are positive (UserError naming the flag).
void validate_metrics_args(const TrainingArgs& a);

class TrainingMetrics {
 public:
  // On the writing rank, opens the event file in --tensorboard-dir and --log-jsonl for appending
  // and says so on `log`; UserError naming the flag when either cannot be written. Elsewhere, or
  // without either flag, every call does nothing.
  TrainingMetrics(const TrainingArgs& a, bool writing_rank, int world_size, Device dev, std::FILE* log = nullptr);
  ~TrainingMetrics();  // flushes and closes

  // Every iteration, that iteration's values (not the log interval's means), as Megatron's
  // training_log: lm loss, learning rate, batch size, loss scale, grad norm (left out when the
  // step was skipped: skipped_iters > 0), world size, memory, at --tensorboard-log-interval;
  // the MoE losses of extra_losses (load_balancing_loss, z_loss; per layer as
  // "moe/<loss>_layer_<l>") at every iteration.
  void iteration(const IterationLog& it);
  // --timing-log-level with --log-timers-to-tensorboard: seconds this rank spent in each
  // group's collectives over `iters` iterations, as "comm-<group>-time" per iteration.
  void comm_times(int64_t iteration, const std::vector<std::pair<std::string, double>>& seconds, int64_t iters);
  // At each log line, with its values: a JSON line; iteration-time (s) and throughput (TFLOP/s/GPU)
  // with --log-timers-to-tensorboard; then both files are flushed.
  void log_line(const IterationLog& l);
  // A validation: "lm loss validation" (and its ppl with --log-validation-ppl-to-tensorboard),
  // a JSON line; both flushed.
  void validation(int64_t iteration, int64_t consumed_samples, double loss);

 private:
  void scalar(const std::string& tag, double value, int64_t iteration, int64_t samples);
  void json_line(const std::string& object);
  TrainingArgs args_;
  int world_size_;
  Device dev_;
  std::unique_ptr<EventFileWriter> events_;
  std::FILE* jsonl_ = nullptr;
};

// The JSON object of a log line: {"type": "train", "iteration": ..., "lm_loss": ..., ...} (NaN
// and infinities as null).
std::string iteration_json(const IterationLog& l);
std::string validation_json(int64_t iteration, int64_t consumed_samples, double loss);

}  // namespace mt
