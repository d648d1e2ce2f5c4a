// The training loop end to end on tiny models: determinism, learning, and argument errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdio>

#include "core/error.h"
#include "kernels/attention.h"
#include "train/log_line.h"
#include "train/trainer.h"

using namespace mt;

namespace {

TrainingArgs tiny_mock() {
  TrainingArgs a;
  a.mock_data = true;
  a.vocab_size = 300;
  a.num_layers = 2;
  a.hidden_size = 32;
  a.num_attention_heads = 4;
  a.seq_length = 32;
  a.micro_batch_size = 2;
  a.global_batch_size = 4;
  a.train_iters = 6;
  a.log_interval = 3;
  a.eval_interval = 3;
  a.eval_iters = 1;
  return a;
}

TrainResult run(const TrainingArgs& a) {
  std::FILE* devnull = std::fopen("/dev/null", "w");
  TrainResult r = pretrain_gpt(a, devnull);
  std::fclose(devnull);
  return r;
}

}  // namespace

TEST(Pretrain, SameSeedGivesBitIdenticalLossCurves) {
  TrainResult a = run(tiny_mock()), b = run(tiny_mock());
  ASSERT_EQ(a.train_losses.size(), 6u);
  EXPECT_EQ(a.train_losses, b.train_losses);
  EXPECT_EQ(a.valid_losses, b.valid_losses);
}

TEST(Pretrain, LossCurveIsIndependentOfThreadCount) {
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  TrainResult one = run(tiny_mock());
  omp_set_num_threads(2);
  TrainResult two = run(tiny_mock());
  omp_set_num_threads(saved);
  EXPECT_EQ(one.train_losses, two.train_losses);
}

TEST(Pretrain, DifferentSeedGivesDifferentLosses) {
  TrainingArgs b = tiny_mock();
  b.seed = 99;
  EXPECT_NE(run(tiny_mock()).train_losses, run(b).train_losses);
}

// --recompute-gelu trades memory for one elementwise pass: the same numbers on CPU, bit for bit.
TEST(Pretrain, RecomputeGeluGivesBitIdenticalLossCurves) {
  TrainingArgs b = tiny_mock();
  b.recompute_gelu = true;
  TrainResult kept = run(tiny_mock()), recomputed = run(b);
  EXPECT_EQ(kept.train_losses, recomputed.train_losses);
  EXPECT_EQ(kept.grad_norms, recomputed.grad_norms);
}

// --deterministic-mode selects cuDNN's bit-reproducible attention backward for the process.
TEST(Pretrain, DeterministicModeTurnsOnTheDeterministicAttentionBackward) {
  const bool before = attention_deterministic();
  set_attention_deterministic(false);
  TrainingArgs a = tiny_mock();
  a.train_iters = 1;
  a.deterministic_mode = true;
  run(a);
  EXPECT_TRUE(attention_deterministic());
  set_attention_deterministic(before);
}

TEST(Pretrain, Bf16TracksFp32OnAShortRun) {
  TrainingArgs a = tiny_mock();
  a.hidden_dropout = a.attention_dropout = 0.0f;
  TrainingArgs b = a;
  b.bf16 = true;
  TrainResult fa = run(a), fb = run(b);
  for (size_t i = 0; i < fa.train_losses.size(); ++i) EXPECT_NEAR(fa.train_losses[i], fb.train_losses[i], 0.05) << i;
}

TEST(Pretrain, ExitIntervalStopsEarly) {
  TrainingArgs a = tiny_mock();
  a.exit_interval = 2;
  EXPECT_EQ(run(a).iterations, 2);
}

TEST(Pretrain, MockDataIsLearned) {
  TrainingArgs a = tiny_mock();
  a.train_iters = 40;
  a.lr = 3e-3;
  a.eval_interval = 40;
  TrainResult r = run(a);
  EXPECT_LT(r.train_losses.back(), r.train_losses.front() - 0.5);
}

TEST(Pretrain, InvalidArgumentsNameTheFlag) {
  auto expect_error = [](TrainingArgs a, const char* needle) {
    try {
      run(a);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TrainingArgs a = tiny_mock();
  a.hidden_size = 30;
  expect_error(a, "--hidden-size 30 is not divisible by --num-attention-heads 4");
  a = tiny_mock();
  a.global_batch_size = 5;
  expect_error(a, "--global-batch-size 5 is not divisible by --micro-batch-size 2");
  a = tiny_mock();
  a.lr_decay_style = "exp";
  expect_error(a, "--lr-decay-style");
  a = tiny_mock();
  a.mock_data = false;
  a.data_path = {"/nonexistent/prefix"};
  expect_error(a, "/nonexistent/prefix");
}

TEST(LogLine, HasMegatronFieldsInOrder) {
  IterationLog l;
  l.iteration = 10;
  l.train_iters = 100;
  l.consumed_samples = 320;
  l.elapsed_ms_per_iter = 412.34;
  l.tflops_per_gpu = 123.44;
  l.learning_rate = 3e-4;
  l.global_batch_size = 32;
  l.lm_loss = 10.34567;
  l.grad_norm = 5.1234;
  std::string s = format_iteration_line(l);
  const char* fields[] = {"iteration       10/     100 |", "consumed samples:          320 |",
                          "elapsed time per iteration (ms): 412.3 |", "throughput per GPU (TFLOP/s/GPU): 123.4 |",
                          "learning rate: 3.000000E-04 |", "global batch size:    32 |", "lm loss: 1.034567E+01 |",
                          "loss scale: 1.0 |", "grad norm: 5.123 |", "number of skipped iterations:   0 |"};
  size_t pos = 0;
  for (const char* f : fields) {
    size_t p = s.find(f, pos);
    ASSERT_NE(p, std::string::npos) << f << " in " << s;
    pos = p;
  }
}

TEST(LogLine, AttentionChoiceNamesTheNativeKernelAndWhy) {
  EXPECT_EQ(format_attention_choice({true, false, true, 0.0}),
            "> attention: cuDNN fused flash attention, atomic dQ accumulation in backward (--deterministic-mode: "
            "bit-reproducible) (native kernel for a shape cuDNN rejects)");
  EXPECT_EQ(format_attention_choice({true, false, true, 0.0, true}),
            "> attention: cuDNN fused flash attention, deterministic backward (--deterministic-mode) (native kernel "
            "for a shape cuDNN rejects)");
  EXPECT_EQ(format_attention_choice({true, false, true, 0.1}),
            "> attention: native kernel, several times slower than cuDNN's (--attention-dropout 0.1 > 0; "
            "cuDNN's fused attention runs with --attention-dropout 0)");
  EXPECT_EQ(format_attention_choice({true, false, false, 0.0}),
            "> attention: native kernel, several times slower than cuDNN's (cuDNN's fused attention needs --bf16 "
            "or --fp16)");
  EXPECT_EQ(format_attention_choice({false, false, true, 0.0}),
            "> attention: native kernel, several times slower than cuDNN's (this build has no cuDNN)");
  EXPECT_EQ(format_attention_choice({true, true, true, 0.0}),
            "> attention: native kernel, several times slower than cuDNN's (MT_ATTENTION_BACKEND=native)");
}
