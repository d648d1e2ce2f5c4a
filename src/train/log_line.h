#pragma once
// Megatron-LM's stdout lines, so existing log parsers keep working.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mt {

struct IterationLog {
  int64_t iteration = 0, train_iters = 0, consumed_samples = 0;
  double elapsed_ms_per_iter = 0, tflops_per_gpu = 0, tokens_per_sec_per_gpu = 0;
  double learning_rate = 0;
  int64_t global_batch_size = 0;
  double lm_loss = 0, loss_scale = 1, grad_norm = 0;
  int64_t skipped_iters = 0, nan_iters = 0;
  // --log-num-zeros-in-grad and --log-params-norm (< 0: not printed), after the grad norm.
  double num_zeros = -1, params_norm = -1;
  // Printed after the lm loss as "name: value |" (MoE: load_balancing_loss, z_loss).
  std::vector<std::pair<std::string, double>> extra_losses;
};

// " [2026-11-22 10:00:00] iteration       10/     100 | consumed samples: ... |"
std::string format_iteration_line(const IterationLog& l);
// "validation loss at iteration 10 | lm loss value: 5.0E+00 | lm loss PPL: 1.4E+02 |", framed by dashes.
std::string format_validation_block(const std::string& where, double loss);
// --timing-log-level 1, from seconds per group over `iters` iterations:
// " communication (this rank, ms per iteration of 123.4 ms): tp 12.34 | dp 5.67 |"
std::string format_comm_times(const std::vector<std::pair<std::string, double>>& seconds, int64_t iters,
                              double iteration_ms);

// The setup line naming which attention implementation a GPU run gets and, when it is the
// (several times slower) native kernel, why and what would select cuDNN's fused kernel.
struct AttentionChoice {
  bool has_cudnn = false;     // the build has the cuDNN path
  bool forced_native = false; // MT_ATTENTION_BACKEND=native
  bool half = false;          // --bf16 or --fp16
  double dropout = 0;         // --attention-dropout
  bool deterministic = false; // --deterministic-mode (cuDNN's bit-reproducible backward)
};
std::string format_attention_choice(const AttentionChoice& c);

}  // namespace mt
