#include "train/training_metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/allocator.h"
#include "core/cuda/cuda_backend.h"
#include "core/error.h"
#include "train/tensorboard_writer.h"

namespace mt {
namespace {

// A JSON number; JSON has no NaN or infinity, so those are null.
std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string("null"); }

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      o += {'\\', c};
    else if (uint8_t(c) < 0x20)
      o += fmt::format("\\u{:04x}", int(c));
    else
      o += c;
  }
  return o + "\"";
}

// Megatron's MoE tag for a log-line loss name: the load-balancing loss is named after its type
// (seq_load_balancing_loss, global_load_balancing_loss), per-layer values go under "moe/".
std::string moe_tag(const std::string& name, const std::string& balancing) {
  auto loss = [&](const std::string& n) {
    if (n != "load_balancing_loss") return n;
    if (balancing == "seq_aux_loss") return std::string("seq_load_balancing_loss");
    if (balancing == "global_aux_loss") return std::string("global_load_balancing_loss");
    return n;
  };
  if (name.rfind("layer_", 0) == 0) {  // layer_<l>_<loss>
    const size_t us = name.find('_', 6);
    if (us != std::string::npos)
      return fmt::format("moe/{}_layer_{}", loss(name.substr(us + 1)), name.substr(6, us - 6));
  }
  return loss(name);
}

}  // namespace

void validate_metrics_args(const TrainingArgs& a) {
  if (a.tensorboard_log_interval <= 0)
    MT_USER_ERROR("--tensorboard-log-interval must be positive, got {}", a.tensorboard_log_interval);
  if (a.tensorboard_queue_size <= 0)
    MT_USER_ERROR("--tensorboard-queue-size must be positive, got {}", a.tensorboard_queue_size);
}

std::string iteration_json(const IterationLog& l) {
  std::string s = fmt::format(
      "{{\"type\": \"train\", \"iteration\": {}, \"train_iters\": {}, \"consumed_samples\": {}, \"elapsed_ms\": {}, "
      "\"tflops_per_gpu\": {}, \"tokens_per_sec_per_gpu\": {}, \"lr\": {}, \"global_batch_size\": {}, "
      "\"lm_loss\": {}, \"loss_scale\": {}, \"grad_norm\": {}, \"skipped_iterations\": {}, \"nan_iterations\": {}",
      l.iteration, l.train_iters, l.consumed_samples, json_number(l.elapsed_ms_per_iter), json_number(l.tflops_per_gpu),
      json_number(l.tokens_per_sec_per_gpu), json_number(l.learning_rate), l.global_batch_size, json_number(l.lm_loss),
      json_number(l.loss_scale), json_number(l.grad_norm), l.skipped_iters, l.nan_iters);
  for (const auto& [name, v] : l.extra_losses) s += fmt::format(", {}: {}", json_string(name), json_number(v));
  return s + fmt::format(", \"wall_time\": {:.3f}}}", unix_time_now());
}

std::string validation_json(int64_t iteration, int64_t consumed_samples, double loss) {
  return fmt::format(
      "{{\"type\": \"validation\", \"iteration\": {}, \"consumed_samples\": {}, \"lm_loss\": {}, \"ppl\": {}, "
      "\"wall_time\": {:.3f}}}",
      iteration, consumed_samples, json_number(loss), json_number(std::exp(std::min(loss, 20.0))), unix_time_now());
}

TrainingMetrics::TrainingMetrics(const TrainingArgs& a, bool writing_rank, int world_size, Device dev, std::FILE* log)
    : args_(a), world_size_(world_size), dev_(dev) {
  if (!writing_rank) return;
  if (!a.tensorboard_dir.empty()) {
    try {
      events_ = std::make_unique<EventFileWriter>(a.tensorboard_dir, a.tensorboard_queue_size);
    } catch (const UserError& e) {
      MT_USER_ERROR("--tensorboard-dir {}", e.what());
    }
    if (log) fmt::print(log, "> TensorBoard: writing {}\n", events_->path());
  }
  if (!a.log_jsonl.empty()) {
    const std::filesystem::path p(a.log_jsonl);
    std::error_code ec;
    if (p.has_parent_path() && !std::filesystem::is_directory(p.parent_path(), ec))
      MT_USER_ERROR("--log-jsonl {}: the directory {} does not exist", a.log_jsonl, p.parent_path().string());
    if (std::filesystem::exists(p, ec) && !std::filesystem::is_regular_file(p, ec))
      MT_USER_ERROR("--log-jsonl {}: not a regular file", a.log_jsonl);
    jsonl_ = std::fopen(a.log_jsonl.c_str(), "a");
    if (!jsonl_) MT_USER_ERROR("--log-jsonl {}: cannot open it for appending ({})", a.log_jsonl, std::strerror(errno));
    if (log) fmt::print(log, "> metrics: appending a JSON object per log line and validation to {}\n", a.log_jsonl);
  }
}

TrainingMetrics::~TrainingMetrics() {
  if (jsonl_) std::fclose(jsonl_);
}

void TrainingMetrics::scalar(const std::string& tag, double value, int64_t iteration, int64_t samples) {
  events_->add_scalar(tag, value, iteration);
  events_->add_scalar(tag + " vs samples", value, samples);
}

void TrainingMetrics::json_line(const std::string& object) {
  if (!jsonl_) return;
  std::fputs(object.c_str(), jsonl_);
  std::fputc('\n', jsonl_);
  std::fflush(jsonl_);
}

void TrainingMetrics::iteration(const IterationLog& it) {
  if (!events_) return;
  const int64_t i = it.iteration, n = it.consumed_samples;
  if (i % args_.tensorboard_log_interval == 0) {
    if (args_.log_learning_rate_to_tensorboard) scalar("learning-rate", it.learning_rate, i, n);
    scalar("batch-size", double(it.global_batch_size), i, n);
    scalar("lm loss", it.lm_loss, i, n);
    if (args_.log_loss_scale_to_tensorboard) scalar("loss-scale", it.loss_scale, i, n);
    if (args_.log_world_size_to_tensorboard) scalar("world-size", double(world_size_), i, n);
    if (it.skipped_iters == 0) scalar("grad-norm", it.grad_norm, i, n);
    if (args_.log_memory_to_tensorboard) {
      // Megatron's names for torch.cuda.memory_stats(); on the CPU, the host allocator's
      // tensors (it has no separate reserve).
      const bool gpu = dev_.is_cuda();
      if (gpu) events_->add_scalar("mem-reserved-bytes", double(cuda_reserved_bytes(dev_.index)), i);
      events_->add_scalar("mem-allocated-bytes",
                          double(gpu ? cuda_bytes_in_use(dev_.index) : host_allocator().bytes_in_use()), i);
      events_->add_scalar("mem-max-allocated-bytes",
                          double(gpu ? cuda_peak_bytes(dev_.index) : host_allocator().peak_bytes()), i);
    }
  }
  for (const auto& [name, v] : it.extra_losses)
    events_->add_scalar(moe_tag(name, args_.moe_router_load_balancing_type), v, i);
}

void TrainingMetrics::comm_times(int64_t iteration, const std::vector<std::pair<std::string, double>>& seconds,
                                 int64_t iters) {
  if (!events_ || !args_.log_timers_to_tensorboard) return;
  for (const auto& [group, secs] : seconds)
    events_->add_scalar(fmt::format("comm-{}-time", group), secs / double(std::max<int64_t>(iters, 1)), iteration);
}

void TrainingMetrics::log_line(const IterationLog& l) {
  json_line(iteration_json(l));
  if (!events_) return;
  if (args_.log_timers_to_tensorboard) {
    events_->add_scalar("iteration-time", l.elapsed_ms_per_iter / 1000.0, l.iteration);
    events_->add_scalar("throughput", l.tflops_per_gpu, l.iteration);
  }
  events_->flush();
}

void TrainingMetrics::validation(int64_t iteration, int64_t consumed_samples, double loss) {
  json_line(validation_json(iteration, consumed_samples, loss));
  if (!events_) return;
  scalar("lm loss validation", loss, iteration, consumed_samples);
  if (args_.log_validation_ppl_to_tensorboard)
    scalar("lm loss validation ppl", std::exp(std::min(loss, 20.0)), iteration, consumed_samples);
  events_->flush();
}

}  // namespace mt
