#include "metrics_flags.h"

namespace mt {

void add_metrics_flags(CLI::App& app, TrainingArgs& a) {
  const char* g = "TensorBoard and metrics";
  app.add_option("--tensorboard-dir", a.tensorboard_dir,
                 "Write TensorBoard event files here (created if missing; by the last rank, with Megatron's tag "
                 "names): view with `tensorboard --logdir DIR`")->group(g);
  app.add_option("--tensorboard-log-interval", a.tensorboard_log_interval,
                 "Iterations between TensorBoard scalars (each one that iteration's values)")
      ->capture_default_str()->group(g);
  app.add_option("--tensorboard-queue-size", a.tensorboard_queue_size,
                 "Events written between flushes of the event file (it is also flushed at every log line and "
                 "validation)")->capture_default_str()->group(g);
  app.add_flag("--log-timers-to-tensorboard", a.log_timers_to_tensorboard,
               "Also write iteration-time (s), throughput (TFLOP/s/GPU) and, with --timing-log-level, "
               "comm-<group>-time (s per iteration) at each log line")->group(g);
  app.add_flag("--log-validation-ppl-to-tensorboard", a.log_validation_ppl_to_tensorboard,
               "Also write the validation perplexity (lm loss validation ppl)")->group(g);
  app.add_flag("--log-memory-to-tensorboard", a.log_memory_to_tensorboard,
               "Also write mem-reserved-bytes (GPU), mem-allocated-bytes and mem-max-allocated-bytes")->group(g);
  app.add_flag("--log-world-size-to-tensorboard", a.log_world_size_to_tensorboard, "Also write world-size")->group(g);
  app.add_flag("--log-loss-scale-to-tensorboard,!--no-log-loss-scale-to-tensorboard,"
               "!--disable-log-loss-scale-to-tensorboard",
               a.log_loss_scale_to_tensorboard, "Write loss-scale (default: on)")->group(g);
  // Older Megatron's spellings (the learning rate and batch size are always written by today's).
  app.add_flag("--log-learning-rate-to-tensorboard,!--no-log-learning-rate-to-tensorboard,"
               "!--no-log-learnig-rate-to-tensorboard",
               a.log_learning_rate_to_tensorboard, "Write learning-rate (default: on)")->group(g);
  app.add_flag("--log-batch-size-to-tensorboard")->description("Accepted: batch-size is always written")->group(g);
  app.add_option("--log-jsonl", a.log_jsonl,
                 "Append one JSON object per log line and per validation to FILE, flushed as written (megatron.cpp's "
                 "own): iteration, consumed_samples, lm_loss, lr, grad_norm, loss_scale, elapsed_ms, "
                 "tokens_per_sec_per_gpu, tflops_per_gpu, skipped/nan counts, MoE losses")->group(g);
}

}  // namespace mt
