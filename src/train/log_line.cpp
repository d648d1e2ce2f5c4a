#include "train/log_line.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>

namespace mt {
namespace {
std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}
}  // namespace

std::string format_iteration_line(const IterationLog& l) {
  std::string s = fmt::format(" [{}] iteration {:8d}/{:8d} |", timestamp(), l.iteration, l.train_iters);
  s += fmt::format(" consumed samples: {:12d} |", l.consumed_samples);
  s += fmt::format(" elapsed time per iteration (ms): {:.1f} |", l.elapsed_ms_per_iter);
  // Megatron prints one decimal; small (CPU) numbers keep three significant digits.
  s += l.tflops_per_gpu >= 10 ? fmt::format(" throughput per GPU (TFLOP/s/GPU): {:.1f} |", l.tflops_per_gpu)
                              : fmt::format(" throughput per GPU (TFLOP/s/GPU): {:.3g} |", l.tflops_per_gpu);
  s += fmt::format(" tokens per second per GPU: {:.0f} |", l.tokens_per_sec_per_gpu);
  s += fmt::format(" learning rate: {:.6E} |", l.learning_rate);
  s += fmt::format(" global batch size: {:5d} |", l.global_batch_size);
  s += fmt::format(" lm loss: {:.6E} |", l.lm_loss);
  for (const auto& [name, v] : l.extra_losses) s += fmt::format(" {}: {:.6E} |", name, v);
  s += fmt::format(" loss scale: {:.1f} |", l.loss_scale);
  s += fmt::format(" grad norm: {:.3f} |", l.grad_norm);
  if (l.num_zeros >= 0) s += fmt::format(" num zeros: {:.1f} |", l.num_zeros);
  if (l.params_norm >= 0) s += fmt::format(" params norm: {:.3f} |", l.params_norm);
  s += fmt::format(" number of skipped iterations: {:3d} |", l.skipped_iters);
  s += fmt::format(" number of nan iterations: {:3d} |", l.nan_iters);
  return s;
}

std::string format_validation_block(const std::string& where, double loss) {
  std::string body = fmt::format(" validation loss {} | lm loss value: {:.6E} | lm loss PPL: {:.6E} | ", where, loss,
                                 std::exp(std::min(loss, 20.0)));
  std::string dashes(body.size() + 1, '-');
  return dashes + "\n" + body + "\n" + dashes;
}

std::string format_attention_choice(const AttentionChoice& c) {
  std::string why;
  if (c.forced_native)
    why = "MT_ATTENTION_BACKEND=native";
  else if (!c.has_cudnn)
    why = "this build has no cuDNN";
  else if (!c.half)
    why = "cuDNN's fused attention needs --bf16 or --fp16";
  else if (c.dropout > 0)
    why = fmt::format("--attention-dropout {} > 0; cuDNN's fused attention runs with --attention-dropout 0",
                      c.dropout);
  if (why.empty())
    return fmt::format("> attention: cuDNN fused flash attention, {} (native kernel for a shape cuDNN rejects)",
                       c.deterministic ? "deterministic backward (--deterministic-mode)"
                                       : "atomic dQ accumulation in backward (--deterministic-mode: bit-reproducible)");
  return fmt::format("> attention: native kernel, several times slower than cuDNN's ({})", why);
}

std::string format_comm_times(const std::vector<std::pair<std::string, double>>& seconds, int64_t iters,
                              double iteration_ms) {
  std::string s = fmt::format(" communication (this rank, ms per iteration of {:.1f} ms):", iteration_ms);
  if (seconds.empty()) s += " none |";
  for (const auto& [group, secs] : seconds)
    s += fmt::format(" {} {:.2f} |", group, 1000.0 * secs / double(std::max<int64_t>(iters, 1)));
  return s;
}

}  // namespace mt
