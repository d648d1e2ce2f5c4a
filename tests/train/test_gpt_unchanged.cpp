// GPT's training is bit-identical to the recorded curves of the GPT-2-only model layer (commit
// 6ba6a13, before the transformer composition redesign): the loss of every iteration and the
// validation loss, fp32 and bf16, dropout on and off, recomputation and chunked loss, on CPU.
// The values are those of the CPU backend's AVX-512 kernels (our own GEMM, attention, GeLU and
// cross-entropy; x86-64-v3 build) with glibc 2.36's libm (Debian 12, the CI image): other CPUs take
// OpenBLAS, whose kernels sum in another order per CPU model, and another libm rounds its
// transcendentals differently (the GPU machine's host, an AVX-512 Xeon on another distribution,
// differs in the 8th digit), so there the test is skipped. MT_RECORD_GOLDEN=1 prints the values in the form
// below instead of checking them.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gnu/libc-version.h>

#include "kernels/cpu/blas.h"
#include "train/trainer.h"

using namespace mt;

namespace {

TrainingArgs tiny_gpt(const std::string& variant) {
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
  a.device = "cpu";
  if (variant == "nodropout_bf16") {
    a.hidden_dropout = a.attention_dropout = 0.0f;
    a.bf16 = true;
  } else if (variant == "recompute_chunked") {
    a.recompute_gelu = true;
    a.cross_entropy_chunks = 3;
  }
  return a;
}

std::vector<double> run(const std::string& variant) {
  std::FILE* devnull = std::fopen("/dev/null", "w");
  TrainResult r = pretrain_gpt(tiny_gpt(variant), devnull);
  std::fclose(devnull);
  std::vector<double> v = r.train_losses;
  v.insert(v.end(), r.valid_losses.begin(), r.valid_losses.end());
  return v;
}

void check(const std::string& variant, const std::vector<double>& want) {
  if (!cpu::sgemm_avx512_available() || std::strcmp(gnu_get_libc_version(), "2.36") != 0)
    GTEST_SKIP() << "the recorded curves are the AVX-512 kernels' with glibc 2.36 (see above)";
  const std::vector<double> got = run(variant);
  if (std::getenv("MT_RECORD_GOLDEN")) {
    std::printf("  // %s\n  {", variant.c_str());
    for (double x : got) std::printf("%a, ", x);
    std::printf("}\n");
    return;
  }
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << variant << " value " << i;
}

}  // namespace

TEST(GptUnchanged, DropoutOnFp32) {
  check("dropout_fp32", {0x1.6ca68c8cp+2, 0x1.6aee93f4p+2, 0x1.6bf77888p+2, 0x1.6b611f5cp+2, 0x1.69f5c3a8p+2,
                         0x1.6a93bf8cp+2, 0x1.6d922358p+2, 0x1.6a80095cp+2});
}
TEST(GptUnchanged, NoDropoutBf16) {
  check("nodropout_bf16", {0x1.6ca040e4p+2, 0x1.6b01e618p+2, 0x1.6c44c41cp+2, 0x1.6aea12fcp+2, 0x1.69a066c8p+2,
                           0x1.6a7547dp+2, 0x1.6d88606p+2, 0x1.6a6c44ap+2});
}
TEST(GptUnchanged, RecomputeGeluChunkedLoss) {
  check("recompute_chunked", {0x1.6ca68c8cp+2, 0x1.6aee93fp+2, 0x1.6bf7788p+2, 0x1.6b611f7p+2, 0x1.69f5c3a8p+2,
                              0x1.6a93bf8p+2, 0x1.6d922354p+2, 0x1.6a80097p+2});
}
