// ShardedTensor geometry: the overlap of two pieces (boxes with optional flattened ranges) is
// copied element for element as a brute-force walk over the global tensor would; CRC-32C matches
// the standard check value.
#include <gtest/gtest.h>

#include <random>

#include "core/crc32c.h"
#include "checkpoint/sharded_tensor.h"
#include "core/error.h"

using namespace mt;

namespace {

// Position of global flat index g within a piece, or -1 when the piece does not hold it.
int64_t position_in(const PieceBox& b, const Shape& global, int64_t g) {
  const size_t n = global.size();
  Shape idx(n);
  for (size_t d = n; d-- > 0;) {
    idx[d] = g % global[d];
    g /= global[d];
  }
  int64_t f = 0;
  for (size_t d = 0; d < n; ++d) {
    if (idx[d] < b.offset[d] || idx[d] >= b.offset[d] + b.shape[d]) return -1;
    f = f * b.shape[d] + (idx[d] - b.offset[d]);
  }
  if (f < b.flat_begin || f >= b.flat_end) return -1;
  return f - b.flat_begin;
}

PieceBox random_box(const Shape& global, std::mt19937& rng) {
  PieceBox b;
  for (int64_t g : global) {
    int64_t lo = std::uniform_int_distribution<int64_t>(0, g - 1)(rng);
    int64_t hi = std::uniform_int_distribution<int64_t>(lo + 1, g)(rng);
    b.offset.push_back(lo);
    b.shape.push_back(hi - lo);
  }
  const int64_t n = shape_numel(b.shape);
  b.flat_begin = 0;
  b.flat_end = n;
  if (rng() % 2) {
    b.flat_begin = std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
    b.flat_end = std::uniform_int_distribution<int64_t>(b.flat_begin + 1, n)(rng);
  }
  return b;
}

}  // namespace

TEST(ShardedTensor, CopyOverlapMatchesBruteForce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const int rank = 1 + int(rng() % 4);
    Shape global;
    for (int d = 0; d < rank; ++d) global.push_back(1 + int64_t(rng() % 5));
    const int64_t numel = shape_numel(global);
    PieceBox src = random_box(global, rng), dst = random_box(global, rng);
    std::vector<float> s(size_t(src.flat_end - src.flat_begin)), o(size_t(dst.flat_end - dst.flat_begin), -1.0f);
    for (size_t i = 0; i < s.size(); ++i) s[i] = float(i) + 0.5f;
    std::vector<float> want = o;
    int64_t expect = 0;
    for (int64_t g = 0; g < numel; ++g) {
      int64_t ps = position_in(src, global, g), pd = position_in(dst, global, g);
      if (ps >= 0 && pd >= 0) {
        want[size_t(pd)] = s[size_t(ps)];
        ++expect;
      }
    }
    EXPECT_EQ(overlap_numel(src, dst), expect);
    int64_t got = copy_overlap(src, s.data(), DType::F32, dst, o.data(), DType::F32);
    ASSERT_EQ(got, expect) << "trial " << trial;
    ASSERT_EQ(o, want) << "trial " << trial;
  }
}

TEST(ShardedTensor, CopyOverlapConvertsFloatTypes) {
  PieceBox whole{{0}, {4}, 0, 4};
  float src[4] = {1.0f, -2.5f, 3.0f, 0.125f};
  uint16_t bf[4];
  EXPECT_EQ(copy_overlap(whole, src, DType::F32, whole, bf, DType::BF16), 4);
  float back[4];
  EXPECT_EQ(copy_overlap(whole, bf, DType::BF16, whole, back, DType::F32), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], src[i]);
}

TEST(ShardedTensor, NormalizedChecksTheBox) {
  Tensor d = Tensor::zeros({2, 3}, DType::F32);
  ShardedTensor t = ShardedTensor::slice("w", d, {4, 3}, 0, 2);
  ShardedTensor n = normalized(t, "saving");
  EXPECT_EQ(n.global_offset, (Shape{2, 0}));
  EXPECT_EQ(n.flat_end, 6);
  t.global_offset = {3, 0};  // rows 3..4 of a 4-row tensor
  EXPECT_THROW(normalized(t, "saving"), UserError);
  ShardedTensor r = ShardedTensor::whole("w", d);
  r.flat_begin = 1;  // 5 elements in the range, 6 in the tensor
  EXPECT_THROW(normalized(r, "loading"), UserError);
}

TEST(ShardedTensor, ShardFlatBufferCutsAtTheRange) {
  std::vector<FlatTensorLayout> l = {{"a", {2, 4}, 0, {4, 4}, 0, 2}, {"b", {4}, 8, {}, -1, 0}};
  Tensor flat = Tensor::zeros({6}, DType::F32);  // elements [5, 11) of the buffer
  auto s = shard_flat_buffer(l, "optimizer.exp_avg.", flat, 5, 0, 1);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].name, "optimizer.exp_avg.a");
  EXPECT_EQ(s[0].global_offset, (Shape{2, 0}));
  EXPECT_EQ(s[0].flat_begin, 5);
  EXPECT_EQ(s[0].flat_end, 8);
  EXPECT_EQ(s[0].replica_id, 0);  // split by tensor parallelism: tp rank 1 owns its slice
  EXPECT_EQ(s[1].flat_begin, 0);
  EXPECT_EQ(s[1].flat_end, 3);
  EXPECT_EQ(s[1].replica_id, 1);  // replicated over tp: only tp rank 0 writes it
}

TEST(ShardedTensor, ShardFlatBufferLeavesOutUnstoredRows) {
  // A vocabulary of 5 rows padded to 8, split over 2 tp ranks of 4 rows x 3 columns: rank 0 holds
  // rows 0-3 (all real), rank 1 rows 4-7 (row 4 real, 5-7 padding). Checkpoints hold [5, 3].
  auto layout = [](int tp_rank) {
    FlatTensorLayout e{"embedding.word_embeddings.weight", {4, 3}, 4, {8, 3}, 0, 4 * tp_rank};
    e.stored_rows = 5;
    return std::vector<FlatTensorLayout>{{"b", {4}, 0, {}, -1, 0}, e};
  };
  Tensor flat = Tensor::empty({16}, DType::F32);
  for (int64_t i = 0; i < 16; ++i) flat.data<float>()[i] = float(i + 1);

  auto r0 = shard_flat_buffer(layout(0), "", flat, 0, 0, 0);
  ASSERT_EQ(r0.size(), 2u);
  EXPECT_EQ(r0[1].global_shape, (Shape{5, 3}));
  EXPECT_EQ(r0[1].local_shape, (Shape{4, 3}));
  EXPECT_TRUE(r0[1].allow_extra_rows);
  EXPECT_EQ(r0[1].data.numel(), 12);

  auto r1 = shard_flat_buffer(layout(1), "", flat, 0, 0, 1);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[1].global_shape, (Shape{5, 3}));
  EXPECT_EQ(r1[1].global_offset, (Shape{4, 0}));
  EXPECT_EQ(r1[1].local_shape, (Shape{1, 3}));
  ASSERT_EQ(r1[1].data.numel(), 3);
  EXPECT_EQ(r1[1].data.data<float>()[0], 5.0f);  // the buffer's element 4: the shard's row 0

  // Distributed-optimizer ranges of the buffer: [8, 16) holds rank 1's embedding elements
  // [4, 12), all padding (no piece); [6, 16) holds rank 0's elements [2, 12), all real.
  EXPECT_TRUE(shard_flat_buffer(layout(1), "", flat.flat_slice(8, 8, {8}), 8, 0, 1).empty());
  auto part = shard_flat_buffer(layout(0), "", flat.flat_slice(6, 10, {10}), 6, 0, 0);
  ASSERT_EQ(part.size(), 1u);
  EXPECT_EQ(part[0].flat_begin, 2);
  EXPECT_EQ(part[0].flat_end, 12);
  // Rank 1's range [5, 16): the box's elements [1, 3) are real rows, the rest padding.
  auto pad = shard_flat_buffer(layout(1), "", flat.flat_slice(5, 11, {11}), 5, 0, 1);
  ASSERT_EQ(pad.size(), 1u);
  EXPECT_EQ(pad[0].local_shape, (Shape{1, 3}));
  EXPECT_EQ(pad[0].flat_begin, 1);
  EXPECT_EQ(pad[0].flat_end, 3);
  EXPECT_EQ(pad[0].data.data<float>()[0], 6.0f);

  // Zeroing the padding: rank 1's rows 5-7 (buffer elements [7, 16)); rank 0 has none.
  Tensor z = flat.to(Device::cpu());
  zero_unstored_rows(layout(0), z, 0);
  for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(z.data<float>()[i], float(i + 1));
  zero_unstored_rows(layout(1), z.flat_slice(6, 10, {10}), 6);
  for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(z.data<float>()[i], i < 7 ? float(i + 1) : 0.0f) << i;
}

TEST(Crc32c, CheckValueAndChaining) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
  EXPECT_EQ(crc32c(s + 4, 5, crc32c(s, 4)), 0xE3069283u);
  EXPECT_EQ(crc32c_hex(0xE3069283u), "e3069283");
  std::vector<uint8_t> big(100003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 31 + 7);
  EXPECT_EQ(crc32c(big.data() + 1001, big.size() - 1001, crc32c(big.data(), 1001)), crc32c(big.data(), big.size()));
}
