// Layout-independent pieces of parallelism that need no second process: tensor-parallel shards
// initialise to the slices of the single-rank tensor, and gradient buckets are cut in reverse
// registration order and padded for data-parallel shards.
#include <gtest/gtest.h>

#include "model/init_method.h"
#include "model/param_buffer.h"
#include "parallel/distributed_data_parallel.h"

using namespace mt;

namespace {

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

}  // namespace

TEST(TensorParallelInit, ShardsAreSlicesOfTheSingleRankTensor) {
  const int64_t out = 12, in = 8;
  ParamAndGradBuffer full;
  auto w = full.add("w", {out, in}, false);
  full.allocate(DType::F32, Device::cpu());
  init_normal(full, w, 0.02f, 7);
  std::vector<float> ref = values(full.param(w));
  for (int tp : {2, 4}) {
    for (int r = 0; r < tp; ++r) {
      ParamAndGradBuffer rows, cols;
      auto wr = rows.add_shard("w", {out / tp, in}, {out, in}, 0, r * (out / tp), false);
      auto wc = cols.add_shard("w", {out, in / tp}, {out, in}, 1, r * (in / tp), false);
      rows.allocate(DType::F32, Device::cpu());
      cols.allocate(DType::F32, Device::cpu());
      init_normal(rows, wr, 0.02f, 7);
      init_normal(cols, wc, 0.02f, 7);
      const float* pr = rows.param(wr).data<float>();
      const float* pc = cols.param(wc).data<float>();
      for (int64_t i = 0; i < out / tp; ++i)
        for (int64_t j = 0; j < in; ++j) ASSERT_EQ(pr[i * in + j], ref[size_t((r * (out / tp) + i) * in + j)]);
      for (int64_t i = 0; i < out; ++i)
        for (int64_t j = 0; j < in / tp; ++j) ASSERT_EQ(pc[i * (in / tp) + j], ref[size_t(i * in + r * (in / tp) + j)]);
      EXPECT_TRUE(rows.info(wr).tensor_parallel());
      EXPECT_EQ(cols.info(wc).global_shape, (Shape{out, in}));
    }
  }
}

TEST(GradBuckets, OneBucketByDefaultWithTheOldLayout) {
  ParamAndGradBuffer b;
  auto a = b.add("a", {5}, true);
  auto c = b.add("c", {20}, false);
  b.allocate(DType::F32, Device::cpu());
  ASSERT_EQ(b.buckets().size(), 1u);
  EXPECT_EQ(b.info(a).offset, 0);
  EXPECT_EQ(b.info(c).offset, 16);
  EXPECT_EQ(b.numel(), 48);
}

TEST(GradBuckets, ReverseOrderAndPaddedForDataParallelShards) {
  ParamAndGradBuffer b;
  std::vector<int> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(b.add("p" + std::to_string(i), {40}, false));  // 48 each with alignment
  b.set_bucketing(100, ddp_bucket_pad_multiple(3, true));  // 48 x 3
  b.allocate(DType::F32, Device::cpu());
  // From the last parameter: {p5, p4, p3} reaches 144 >= 100, then {p2, p1, p0}.
  ASSERT_EQ(b.buckets().size(), 2u);
  EXPECT_EQ(b.buckets()[0].params, (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(b.buckets()[1].params, (std::vector<int>{0, 1, 2}));
  for (const auto& bk : b.buckets()) EXPECT_EQ(bk.numel % 48, 0);
  // Parameters keep registration order in memory, each bucket contiguous.
  for (int i = 1; i < 6; ++i) EXPECT_GT(b.info(i).offset, b.info(i - 1).offset);
  EXPECT_EQ(b.buckets()[1].offset, 0);
  EXPECT_EQ(b.buckets()[0].offset, b.buckets()[1].numel);
  EXPECT_EQ(b.numel(), b.buckets()[0].offset + b.buckets()[0].numel);
}

TEST(GradBuckets, DefaultSizeIsMegatrons) {
  EXPECT_EQ(default_ddp_bucket_size(8), 40000000);
  EXPECT_EQ(default_ddp_bucket_size(64), 64000000);
}
