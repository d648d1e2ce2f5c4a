// Rank <-> coordinate mapping (Megatron's tp-cp-ep-dp-pp order) and the single-process groups.
#include <gtest/gtest.h>

#include "core/error.h"
#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"

using namespace mt;

TEST(ParallelLayout, TensorParallelVariesFastestThenDataThenPipeline) {
  ParallelLayout l = ParallelLayout::make({2, 1, 1, 2}, 8);  // tp 2, pp 2 -> dp 2
  EXPECT_EQ(l.dp, 2);
  RankCoords c = l.coords(0);
  EXPECT_EQ(c.tp + c.dp + c.pp, 0);
  c = l.coords(1);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 0);
  c = l.coords(2);
  EXPECT_EQ(c.tp, 0);
  EXPECT_EQ(c.dp, 1);
  EXPECT_EQ(c.pp, 0);
  c = l.coords(5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 0);
  EXPECT_EQ(c.pp, 1);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(l.rank_of(l.coords(r)), r);
}

TEST(ParallelLayout, ContextAndExpertSitBetweenTensorAndData) {
  ParallelLayout l = ParallelLayout::make({2, 2, 1, 1}, 8);
  EXPECT_EQ(l.dp, 2);
  RankCoords c = l.coords(3);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.cp, 1);
  EXPECT_EQ(c.dp, 0);
  c = l.coords(4);
  EXPECT_EQ(c.cp, 0);
  EXPECT_EQ(c.dp, 1);
}

// Megatron's expert parallelism splits the data-parallel ranks: with TP 2 and EP 2 on 8 ranks the
// dense layers have DP 4, an expert layer's EP ranks are consecutive DP ranks, and each expert
// has DP / EP = 2 replicas.
TEST(ParallelLayout, ExpertParallelSplitsTheDataParallelRanks) {
  ParallelLayout l = ParallelLayout::make({2, 1, 2, 1}, 8);
  EXPECT_EQ(l.dp, 4);
  EXPECT_EQ(l.expert_dp, 2);
  for (int r = 0; r < 8; ++r) {
    const RankCoords c = l.coords(r);
    EXPECT_EQ(c.tp, r % 2);
    EXPECT_EQ(c.dp, r / 2);
    EXPECT_EQ(c.ep, (r / 2) % 2);
    EXPECT_EQ(l.rank_of(c), r);
  }
  try {
    ParallelLayout::make({1, 1, 4, 1}, 6);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("expert (4)"), std::string::npos) << e.what();
  }
}

TEST(ParallelLayout, WorldNotAMultipleOfModelParallelIsAUserError) {
  try {
    ParallelLayout::make({4, 1, 1, 1}, 6);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("world size 6"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ParallelLayout::make({0, 1, 1, 1}, 1), UserError);
}

TEST(ProcessGroups, SingleProcessNeedsNoMpi) {
  ProcessGroups g(dist::world(), {});
  EXPECT_EQ(g.world_size(), 1);
  EXPECT_EQ(g.tp().size(), 1);
  EXPECT_EQ(g.dp().size(), 1);
  ASSERT_NE(g.embedding(), nullptr);
  Tensor t = Tensor::empty({4}, DType::F32);
  for (int i = 0; i < 4; ++i) t.data<float>()[i] = float(i);
  g.dp().all_reduce(t);
  EXPECT_EQ(t.data<float>()[3], 3.0f);
  Tensor out = Tensor::empty({4}, DType::F32);
  g.tp().all_gather(t, out);
  EXPECT_EQ(out.data<float>()[2], 2.0f);
  EXPECT_EQ(g.world().all_reduce_scalar(2.5), 2.5);
}
