// The architecture flags' relations to the parallel layout, checked before any rank starts.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "train/arguments.h"

using namespace mt;

namespace {

TrainingArgs tiny_llama() {
  TrainingArgs a;
  a.num_layers = 1;
  a.hidden_size = 64;
  a.num_attention_heads = 8;
  a.group_query_attention = true;
  a.num_query_groups = 2;
  a.normalization = "RMSNorm";
  a.swiglu = true;
  a.position_embedding_type = "rope";
  a.micro_batch_size = 1;
  a.global_batch_size = 4;
  return a;
}

std::string parallel_error(const TrainingArgs& a, int world) {
  try {
    validate_parallel_args(a, world);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ArchitectureArgs, QueryGroupsMustSplitOverTensorParallelRanks) {
  TrainingArgs a = tiny_llama();
  a.tensor_model_parallel_size = 4;
  EXPECT_EQ(parallel_error(a, 4), "--num-query-groups 2 is not divisible by --tensor-model-parallel-size 4");
  a.tensor_model_parallel_size = 2;
  EXPECT_EQ(parallel_error(a, 4), "");
}

TEST(ArchitectureArgs, SwigluTakesMegatronsDefaultFfnSize) {
  TrainingArgs a = tiny_llama();
  EXPECT_EQ(default_ffn_hidden_size(a), 128);  // int(4 * 64 * 2 / 3 / 64) * 64
  a.hidden_size = 4096;
  EXPECT_EQ(default_ffn_hidden_size(a), 10880);
  a.swiglu = false;
  EXPECT_EQ(default_ffn_hidden_size(a), 4 * 4096);
}

TEST(ArchitectureArgs, DefaultFfnMustSplitOverTensorParallelRanks) {
  TrainingArgs a = tiny_llama();
  a.hidden_size = 96;  // swiglu default ffn 256
  a.num_attention_heads = 2;
  a.num_query_groups = 2;
  a.tensor_model_parallel_size = 2;
  EXPECT_EQ(parallel_error(a, 2), "");
}
