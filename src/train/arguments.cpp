#include "train/arguments.h"

#include "core/error.h"
#include "optim/lr_schedule.h"

namespace mt {

void validate_args(const TrainingArgs& a) {
  auto positive = [](const char* flag, int64_t v) {
    if (v <= 0) MT_USER_ERROR("{} must be positive, got {}", flag, v);
  };
  positive("--num-layers", a.num_layers);
  positive("--hidden-size", a.hidden_size);
  positive("--num-attention-heads", a.num_attention_heads);
  positive("--seq-length", a.seq_length);
  positive("--micro-batch-size", a.micro_batch_size);
  positive("--global-batch-size", a.global_batch_size);
  positive("--train-iters", a.train_iters);
  positive("--log-interval", a.log_interval);
  if (a.hidden_size % a.num_attention_heads != 0)
    MT_USER_ERROR("--hidden-size {} is not divisible by --num-attention-heads {}", a.hidden_size,
                  a.num_attention_heads);
  if (a.global_batch_size % a.micro_batch_size != 0)
    MT_USER_ERROR("--global-batch-size {} is not divisible by --micro-batch-size {} (x data-parallel size 1)",
                  a.global_batch_size, a.micro_batch_size);
  if (a.max_position_embeddings != 0 && a.max_position_embeddings < a.seq_length)
    MT_USER_ERROR("--max-position-embeddings {} is smaller than --seq-length {}", a.max_position_embeddings,
                  a.seq_length);
  if (a.bf16 && a.fp16) MT_USER_ERROR("--bf16 and --fp16 are mutually exclusive");
  LrDecayStyle style;
  if (!parse_lr_decay_style(a.lr_decay_style, style))
    MT_USER_ERROR("--lr-decay-style '{}' is not one of constant, linear, cosine, inverse-square-root",
                  a.lr_decay_style);
  if (a.lr < 0 || a.min_lr < 0 || a.min_lr > a.lr)
    MT_USER_ERROR("--min-lr {} must be between 0 and --lr {}", a.min_lr, a.lr);
  if (a.lr_warmup_fraction > 1.0) MT_USER_ERROR("--lr-warmup-fraction {} must be at most 1", a.lr_warmup_fraction);
  if (a.hidden_dropout < 0 || a.hidden_dropout >= 1)
    MT_USER_ERROR("--hidden-dropout {} must be in [0, 1)", a.hidden_dropout);
  if (a.attention_dropout < 0 || a.attention_dropout >= 1)
    MT_USER_ERROR("--attention-dropout {} must be in [0, 1)", a.attention_dropout);
  if (a.mock_data && !a.data_path.empty()) MT_USER_ERROR("--mock-data and --data-path are mutually exclusive");
  if (a.mock_data && a.vocab_size <= 0) MT_USER_ERROR("--mock-data needs --vocab-size");
  if (a.device != "cpu" && a.device != "cuda" && a.device != "auto")
    MT_USER_ERROR("--device '{}' must be auto, cpu or cuda", a.device);
  if (a.eval_iters < 0) MT_USER_ERROR("--eval-iters must be >= 0, got {}", a.eval_iters);
  if (a.eval_interval <= 0) MT_USER_ERROR("--eval-interval must be positive, got {}", a.eval_interval);
}

}  // namespace mt
