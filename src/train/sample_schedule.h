#pragma once
// Megatron's learning-rate schedule from the arguments: counted in iterations, or with
// --train-samples in samples (--lr-warmup-samples, --lr-decay-samples; the scheduler advances by
// the global batch size each iteration), warmup from --lr-warmup-init; and --decoupled-lr's
// schedule for the embedding and output layer (the same shape, its own peak and minimum).
#include <cstdint>
#include <vector>

#include "data/gpt_dataset.h"
#include "optim/lr_schedule.h"
#include "train/arguments.h"

namespace mt {

// The schedule with peak `max_lr` and minimum `min_lr`, in the units lr_schedule_step counts.
LrScheduleConfig lr_schedule_config(const TrainingArgs& a, double max_lr, double min_lr);
// The scheduler's step after (1-based) `iteration`: the iteration, or with --train-samples the
// samples consumed by then.
int64_t lr_schedule_step(const TrainingArgs& a, int64_t iteration);
// --decoupled-lr's schedule, or none (returns false) without it.
bool decoupled_lr_schedule(const TrainingArgs& a, LrScheduleConfig& out);

// --calculate-per-token-loss: the loss tokens of each of this rank's `num_micro` microbatches of
// the global batch starting at sample `consumed` (mask sums; every token without --eod-mask-loss).
std::vector<double> microbatch_loss_tokens(const SampleSource& source, const TrainingArgs& a, int64_t consumed,
                                           int num_micro, int dp_size, int dp_rank);

}  // namespace mt
