#include "train/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <memory>

#include "core/allocator.h"
#include "core/cuda/cuda_backend.h"
#include "core/error.h"
#include "kernels/elementwise.h"
#include "model/gpt_model.h"
#include "optim/grad_scaler.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "train/batch.h"
#include "train/data_setup.h"
#include "train/flops.h"
#include "train/log_line.h"

namespace mt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

GPTConfig model_config(const TrainingArgs& a, int64_t vocab) {
  GPTConfig c;
  c.num_layers = a.num_layers;
  c.hidden_size = a.hidden_size;
  c.ffn_hidden_size = a.ffn_hidden_size > 0 ? a.ffn_hidden_size : 4 * a.hidden_size;
  c.num_attention_heads = a.num_attention_heads;
  c.seq_length = a.seq_length;
  c.max_position_embeddings = a.max_position_embeddings > 0 ? a.max_position_embeddings : a.seq_length;
  c.vocab_size = vocab;
  c.padded_vocab_size = pad_vocab_size(vocab, a.make_vocab_size_divisible_by);
  c.init_method_std = a.init_method_std;
  c.hidden_dropout = a.hidden_dropout;
  c.attention_dropout = a.attention_dropout;
  c.layernorm_epsilon = a.layernorm_epsilon;
  c.params_dtype = a.bf16 ? DType::BF16 : a.fp16 ? DType::F16 : DType::F32;
  return c;
}

double mean_loss(const Tensor& losses) {
  Tensor h = losses.device().is_cpu() ? losses : losses.to(Device::cpu());
  const float* p = h.data<float>();
  double s = 0;
  for (int64_t i = 0; i < h.numel(); ++i) s += p[i];
  return s / double(h.numel());
}

// Mean loss over eval_iters global batches of the validation source, continuing where the
// previous evaluation stopped (as Megatron's validation iterator does).
double evaluate(const GPTModel& model, const SampleSource& valid, const TrainingArgs& a, int64_t& consumed,
                Device dev) {
  double total = 0;
  int64_t n = 0;
  for (int64_t it = 0; it < a.eval_iters; ++it) {
    for (int m = 0; m < a.global_batch_size / a.micro_batch_size; ++m) {
      Batch b = get_batch(valid, consumed, a.micro_batch_size, a.seq_length, dev);
      consumed += a.micro_batch_size;
      GPTModel::Saved saved;
      ForwardContext ctx{false, a.seed, 0};
      total += mean_loss(model.forward_loss(b.tokens, b.labels, ctx, nullptr, saved));
      ++n;
    }
  }
  return n ? total / double(n) : 0.0;
}

// --device auto: the first GPU when there is one, else the CPU.
Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  const int n = cuda_device_count();
  if (name == "cuda" && n == 0) MT_USER_ERROR("--device cuda: no CUDA device is available (use --device cpu)");
  if (n == 0) return Device::cpu();
  cuda_init_backend();
  return Device::cuda(0);
}

}  // namespace

TrainResult pretrain_gpt(const TrainingArgs& args, std::FILE* log) {
  const auto t_start = Clock::now();
  validate_args(args);
  Device dev = resolve_device(args.device);

  Datasets data = build_datasets(args);
  GPTConfig cfg = model_config(args, data.vocab_size);
  GPTModel model(cfg, dev);
  model.init(args.seed);
  const int64_t n_params = model.num_parameters();
  const int64_t n_no_pos = n_params - int64_t(cfg.max_position_embeddings) * cfg.hidden_size;
  fmt::print(log, "> data: {}\n", data.description);
  fmt::print(log, "> GPT: {} layers, hidden {}, ffn {}, heads {}, seq {}, vocab {} (padded {}), {}, device {}\n",
             cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_attention_heads, cfg.seq_length,
             cfg.vocab_size, cfg.padded_vocab_size, dtype_name(cfg.params_dtype), dev.str());
  fmt::print(log, "> number of parameters: {}\n", n_params);

  OptimizerConfig ocfg{args.weight_decay, args.adam_beta1, args.adam_beta2, args.adam_eps, args.clip_grad};
  AdamWOptimizer optimizer(model.buffer(), ocfg);
  LrScheduleConfig lcfg;
  lcfg.max_lr = args.lr;
  lcfg.min_lr = args.min_lr;
  lcfg.decay_steps = args.lr_decay_iters > 0 ? args.lr_decay_iters : args.train_iters;
  lcfg.warmup_steps = args.lr_warmup_fraction >= 0 ? int64_t(args.lr_warmup_fraction * double(lcfg.decay_steps))
                                                   : args.lr_warmup_iters;
  parse_lr_decay_style(args.lr_decay_style, lcfg.style);
  OptimizerParamScheduler scheduler(lcfg);
  GradScalerConfig scfg;
  scfg.dynamic = args.loss_scale <= 0;
  scfg.initial_scale = scfg.dynamic ? args.initial_loss_scale : args.loss_scale;
  scfg.min_scale = args.min_loss_scale;
  scfg.growth_interval = args.loss_scale_window;
  scfg.hysteresis = args.hysteresis;
  GradScaler scaler(scfg);
  auto loss_scale = [&] { return args.fp16 ? scaler.scale() : 1.0; };

  const int num_micro = args.global_batch_size / args.micro_batch_size;
  const int64_t tokens_per_iter = int64_t(args.global_batch_size) * args.seq_length;
  const double flops_per_iter = flops_per_token(cfg, n_no_pos) * double(tokens_per_iter);
  const int64_t mb_tokens = int64_t(args.micro_batch_size) * args.seq_length;
  Tensor dloss = Tensor::empty({mb_tokens}, DType::F32, dev);
  fmt::print(log, "> training: {} iterations, global batch {} = {} microbatches of {}, seq {}\n", args.train_iters,
             args.global_batch_size, num_micro, args.micro_batch_size, args.seq_length);
  fmt::print(log, "> setup took {:.2f} s\n", seconds_since(t_start));
  std::fflush(log);

  TrainResult result;
  int64_t consumed = 0, valid_consumed = 0, skipped_total = 0, nan_total = 0;
  double interval_loss = 0, interval_norm = 0;
  int64_t interval_iters = 0, interval_steps = 0, last_eval = -1;
  auto t_interval = Clock::now();
  int64_t iteration = 0;
  while (iteration < args.train_iters) {
    ++iteration;
    model.buffer().zero_grads();
    double scale = loss_scale();
    fill(dloss, float(scale / double(mb_tokens) / double(num_micro)));
    double iter_loss = 0;
    for (int m = 0; m < num_micro; ++m) {
      Batch b = get_batch(*data.train, consumed + int64_t(m) * args.micro_batch_size, args.micro_batch_size,
                          args.seq_length, dev);
      ForwardContext ctx{true, args.seed, uint64_t((iteration - 1) * num_micro + m)};
      GPTModel::Saved saved;
      iter_loss += mean_loss(model.forward_loss(b.tokens, b.labels, ctx, &dloss, saved)) / num_micro;
      model.backward(saved);
    }
    double lr = scheduler.lr(iteration);
    StepStats st = optimizer.step(lr, scale);
    if (args.fp16) scaler.update(st.skipped);
    consumed += args.global_batch_size;
    result.train_losses.push_back(iter_loss);
    if (st.skipped) {
      ++skipped_total;
    } else {
      interval_norm += st.grad_norm;
      ++interval_steps;
    }
    if (!std::isfinite(iter_loss)) ++nan_total;
    interval_loss += iter_loss;
    ++interval_iters;

    if (iteration % args.log_interval == 0) {
      double secs = seconds_since(t_interval);
      IterationLog l;
      l.iteration = iteration;
      l.train_iters = args.train_iters;
      l.consumed_samples = consumed;
      l.elapsed_ms_per_iter = 1000.0 * secs / double(interval_iters);
      l.tflops_per_gpu = flops_per_iter * double(interval_iters) / secs / 1e12;
      l.tokens_per_sec_per_gpu = double(tokens_per_iter) * double(interval_iters) / secs;
      l.learning_rate = lr;
      l.global_batch_size = args.global_batch_size;
      l.lm_loss = interval_loss / double(interval_iters);
      l.loss_scale = loss_scale();
      l.grad_norm = interval_steps ? interval_norm / double(interval_steps) : 0.0;
      l.skipped_iters = skipped_total;
      l.nan_iters = nan_total;
      fmt::print(log, "{}\n", format_iteration_line(l));
      std::fflush(log);
      interval_loss = interval_norm = 0;
      interval_iters = interval_steps = skipped_total = nan_total = 0;
    }
    if (data.valid && args.eval_iters > 0 && iteration % args.eval_interval == 0) {
      double v = evaluate(model, *data.valid, args, valid_consumed, dev);
      result.valid_losses.push_back(v);
      last_eval = iteration;
      fmt::print(log, "{}\n", format_validation_block(fmt::format("at iteration {}", iteration), v));
      std::fflush(log);
    }
    if (iteration % args.log_interval == 0) t_interval = Clock::now();  // evaluation time excluded
    if (args.exit_interval > 0 && iteration % args.exit_interval == 0) {
      fmt::print(log, "> exiting at iteration {} (--exit-interval {})\n", iteration, args.exit_interval);
      break;
    }
  }
  result.iterations = iteration;
  if (data.valid && args.eval_iters > 0 && last_eval != iteration) {
    double v = evaluate(model, *data.valid, args, valid_consumed, dev);
    result.valid_losses.push_back(v);
    fmt::print(log, "{}\n", format_validation_block("at the end of training", v));
  }
  fmt::print(log, "> peak host memory in tensors: {:.1f} MiB\n", double(host_allocator().peak_bytes()) / 1048576.0);
  if (dev.is_cuda())
    fmt::print(log, "> peak device memory in tensors: {:.2f} GiB\n", double(cuda_peak_bytes(dev.index)) / 1073741824.0);
  std::fflush(log);
  return result;
}

}  // namespace mt
