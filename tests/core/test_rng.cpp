// Philox4x32-10 (core/rng.h): the Random123 known-answer vectors, the mapping of (seed, stream,
// index) to words, and the uniform and normal distributions built on it.
#include <gtest/gtest.h>

#include <set>

#include "core/rng.h"

namespace mt {
namespace {

struct Kat {
  uint32_t ctr[4], key[2], want[4];
};

TEST(Philox, MatchesRandom123KnownAnswers) {
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    uint32_t ctr[4] = {k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}, key[2] = {k.key[0], k.key[1]};
    philox4x32_10(ctr, key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(ctr[i], k.want[i]) << "word " << i;
  }
}

TEST(Philox, IndexSelectsAWordOfItsBlock) {
  uint32_t block[4];
  philox_block(11, 22, 5, block);  // elements 20..23
  for (int i = 0; i < 4; ++i) EXPECT_EQ(philox_u32(11, 22, 20 + i), block[i]);
  EXPECT_NE(philox_u32(11, 22, 0), philox_u32(11, 23, 0));  // streams differ
  EXPECT_NE(philox_u32(11, 22, 0), philox_u32(12, 22, 0));  // seeds differ
}

TEST(Philox, UniformIsInZeroExclusiveOneInclusive) {
  EXPECT_GT(u32_to_uniform(0), 0.0f);
  EXPECT_EQ(u32_to_uniform(0xffffffffu), 1.0f);
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) sum += philox_uniform(1, 2, uint64_t(i));
  EXPECT_NEAR(sum / n, 0.5, 0.005);
}

TEST(Philox, NormalHasMeanZeroAndUnitStd) {
  const int n = 100000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double x = philox_normal(3, rng_stream("test/normal"), uint64_t(i));
    sum += x;
    sq += x * x;
  }
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.015);  // ~4.7 standard errors
  EXPECT_NEAR(std, 1.0, 0.015);
}

TEST(RngStream, IsACompileTimeHashThatSeparatesNames) {
  static_assert(rng_stream("") == 1469598103934665603ull);  // the FNV-1a 64 offset basis
  std::set<uint64_t> ids = {rng_stream("init/a.weight"), rng_stream("init/b.weight"), rng_stream("dropout/0"),
                            rng_stream("dropout/1")};
  EXPECT_EQ(ids.size(), 4u);
}

}  // namespace
}  // namespace mt
