// Checkpointing in the training loop: 20 iterations straight equal 10 + save + load + 10 bit for
// bit (losses, validation losses, final weights), fp32 with dropout and bf16; async save;
// --finetune, --ckpt-keep-last, a missing checkpoint, a mismatched architecture.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "train/trainer.h"

using namespace mt;
namespace fs = std::filesystem;

namespace {

TrainingArgs tiny() {
  TrainingArgs a;
  a.mock_data = true;
  a.vocab_size = 300;
  a.num_layers = 2;
  a.hidden_size = 32;
  a.num_attention_heads = 4;
  a.seq_length = 16;
  a.micro_batch_size = 2;
  a.global_batch_size = 4;
  a.train_iters = 20;
  a.lr_warmup_iters = 3;
  a.log_interval = 5;
  a.eval_interval = 5;
  a.eval_iters = 1;
  a.device = "cpu";  // dropout stays on (0.1): masks must continue from the restored counter
  return a;
}

TrainResult run(const TrainingArgs& a) {
  std::FILE* devnull = std::fopen("/dev/null", "w");
  TrainOptions o;
  o.return_final_params = true;
  TrainResult r = pretrain_gpt(a, devnull, o);
  std::fclose(devnull);
  return r;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

// 10 iterations saved through --exit-interval, then a second run loads and finishes.
void expect_resume_bit_identical(TrainingArgs a, const std::string& name) {
  TempDir dir(name);
  const TrainResult straight = run(a);
  TrainingArgs first = a;
  first.save = dir.str();
  first.exit_interval = 10;
  const TrainResult r1 = run(first);
  ASSERT_EQ(r1.iterations, 10);
  ASSERT_TRUE(fs::exists(dir.path / "iter_0000010" / "metadata.json"));
  TrainingArgs second = a;
  second.load = dir.str();
  const TrainResult r2 = run(second);
  ASSERT_EQ(r2.iterations, 20);
  ASSERT_EQ(r2.train_losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(r1.train_losses[i], straight.train_losses[i]) << "iteration " << i + 1;
    EXPECT_EQ(r2.train_losses[i], straight.train_losses[10 + i]) << "iteration " << 11 + i;
  }
  ASSERT_EQ(r2.valid_losses.size(), 2u);  // at 15 and 20
  EXPECT_EQ(r2.valid_losses[0], straight.valid_losses[2]);
  EXPECT_EQ(r2.valid_losses[1], straight.valid_losses[3]);
  ASSERT_EQ(r2.final_params.size(), straight.final_params.size());
  for (const auto& [n, p] : straight.final_params) EXPECT_EQ(r2.final_params.at(n), p) << n;
}

}  // namespace

TEST(CheckpointResume, Fp32WithDropoutIsBitIdentical) { expect_resume_bit_identical(tiny(), "mt_resume_fp32"); }

TEST(CheckpointResume, Bf16IsBitIdentical) {
  TrainingArgs a = tiny();
  a.bf16 = true;
  expect_resume_bit_identical(a, "mt_resume_bf16");
}

TEST(CheckpointResume, AsyncSaveIsBitIdentical) {
  TrainingArgs a = tiny();
  a.async_save = true;
  expect_resume_bit_identical(a, "mt_resume_async");
}

TEST(CheckpointResume, KeepLastAndFinalSave) {
  TempDir dir("mt_keep_last");
  TrainingArgs a = tiny();
  a.train_iters = 12;
  a.save = dir.str();
  a.save_interval = 5;
  a.ckpt_keep_last = 2;
  run(a);
  // Saved at 5 and 10 and at the end (12); only the newest two remain.
  EXPECT_FALSE(fs::exists(dir.path / "iter_0000005"));
  EXPECT_TRUE(fs::exists(dir.path / "iter_0000010" / "metadata.json"));
  EXPECT_TRUE(fs::exists(dir.path / "iter_0000012" / "metadata.json"));
}

TEST(CheckpointResume, MissingCheckpointTrainsFromScratch) {
  TempDir dir("mt_no_ckpt");
  TrainingArgs a = tiny();
  a.train_iters = 4;
  TrainingArgs b = a;
  b.load = dir.str();
  EXPECT_EQ(run(b).train_losses, run(a).train_losses);
}

TEST(CheckpointResume, FinetuneLoadsWeightsOnlyAndStartsAtZero) {
  TempDir dir("mt_finetune");
  TrainingArgs a = tiny();
  a.train_iters = 6;
  a.save = dir.str();
  const TrainResult pre = run(a);
  TrainingArgs b = tiny();
  b.train_iters = 6;
  b.load = dir.str();
  b.finetune = true;
  const TrainResult ft = run(b);
  EXPECT_EQ(ft.iterations, 6);
  ASSERT_EQ(ft.train_losses.size(), 6u);
  // Starts from the trained weights: well below the from-scratch first loss.
  EXPECT_LT(ft.train_losses[0], pre.train_losses[0] - 0.1);
}

TEST(CheckpointResume, MismatchedArchitectureIsNamed) {
  TempDir dir("mt_mismatch");
  TrainingArgs a = tiny();
  a.train_iters = 2;
  a.save = dir.str();
  run(a);
  TrainingArgs b = a;
  b.save.clear();
  b.load = dir.str();
  b.num_layers = 3;
  try {
    run(b);
    ADD_FAILURE() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--num-layers: checkpoint 2, now 3"), std::string::npos) << e.what();
  }
}
