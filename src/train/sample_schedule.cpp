#include "train/sample_schedule.h"

#include "train/batch.h"

namespace mt {

LrScheduleConfig lr_schedule_config(const TrainingArgs& a, double max_lr, double min_lr) {
  LrScheduleConfig c;
  c.max_lr = max_lr;
  c.min_lr = min_lr;
  c.warmup_init_lr = a.lr_warmup_init;
  parse_lr_decay_style(a.lr_decay_style, c.style);
  if (a.train_samples > 0) {  // arguments.py / OptimizerParamScheduler in samples
    c.decay_steps = a.lr_decay_samples > 0 ? a.lr_decay_samples : a.train_samples;
    c.warmup_steps = a.lr_warmup_fraction >= 0 ? int64_t(a.lr_warmup_fraction * double(c.decay_steps))
                                               : a.lr_warmup_samples;
  } else {
    c.decay_steps = a.lr_decay_iters > 0 ? a.lr_decay_iters : a.train_iters;
    c.warmup_steps = a.lr_warmup_fraction >= 0 ? int64_t(a.lr_warmup_fraction * double(c.decay_steps))
                                               : a.lr_warmup_iters;
  }
  return c;
}

int64_t lr_schedule_step(const TrainingArgs& a, int64_t iteration) {
  return a.train_samples > 0 ? iteration * int64_t(a.global_batch_size) : iteration;
}

bool decoupled_lr_schedule(const TrainingArgs& a, LrScheduleConfig& out) {
  if (a.decoupled_lr < 0) return false;
  out = lr_schedule_config(a, a.decoupled_lr, a.decoupled_min_lr >= 0 ? a.decoupled_min_lr : a.min_lr);
  return true;
}

std::vector<double> microbatch_loss_tokens(const SampleSource& source, const TrainingArgs& a, int64_t consumed,
                                           int num_micro, int dp_size, int dp_rank) {
  std::vector<double> out(size_t(num_micro), double(a.micro_batch_size) * a.seq_length);
  if (!a.eod_mask_loss) return out;
  for (int m = 0; m < num_micro; ++m) {
    // The trainer's microbatch_start: runs of micro x DP samples, rank r taking the r-th.
    const int64_t first = consumed + (int64_t(m) * dp_size + dp_rank) * a.micro_batch_size;
    const Batch b = get_batch(source, first, a.micro_batch_size, a.seq_length, Device::cpu());
    double n = 0;
    const float* k = b.loss_mask.data<float>();
    for (int64_t i = 0; i < b.loss_mask.numel(); ++i) n += k[i];
    out[size_t(m)] = n;
  }
  return out;
}

}  // namespace mt
