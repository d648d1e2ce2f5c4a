// GPT samples: Megatron's --split arithmetic, the window shuffle and the mock data (the
// GPTDataset indices are in test_gpt_indices.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/gpt_dataset.h"

namespace fs = std::filesystem;
using namespace mt;

namespace {

using Ranges = std::array<DocumentRange, 3>;

Ranges ranges(int64_t a, int64_t b, int64_t c, int64_t d) { return {{{a, b}, {b, c}, {c, d}}}; }

}  // namespace

TEST(SplitDocuments, MegatronDefault969_30_1) {
  EXPECT_EQ(split_documents(1000, "969,30,1"), ranges(0, 969, 999, 1000));
  // 0.969 * 1189 = 1152.1, 0.999 * 1189 = 1187.8
  EXPECT_EQ(split_documents(1189, "969,30,1"), ranges(0, 1152, 1188, 1189));
}

TEST(SplitDocuments, AllTrainLeavesValidAndTestEmpty) {
  auto r = split_documents(37, "100,0,0");
  EXPECT_EQ(r, ranges(0, 37, 37, 37));
  EXPECT_TRUE(r[1].empty());
  EXPECT_TRUE(r[2].empty());
  EXPECT_EQ(split_documents(37, "1"), ranges(0, 37, 37, 37));
}

TEST(SplitDocuments, WeightsAreNormalisedAndMissingOnesAreZero) {
  EXPECT_EQ(split_documents(100, "98,2"), ranges(0, 98, 100, 100));
  EXPECT_EQ(split_documents(100, "0.98, 0.02, 0"), ranges(0, 98, 100, 100));
  EXPECT_EQ(split_documents(100, "49/1/0"), ranges(0, 98, 100, 100));
}

TEST(SplitDocuments, RoundsHalfToEvenLikePython) {
  EXPECT_EQ(split_documents(5, "1,1"), ranges(0, 2, 5, 5));   // round(2.5) == 2
  EXPECT_EQ(split_documents(7, "1,1"), ranges(0, 4, 7, 7));   // round(3.5) == 4
}

TEST(SplitDocuments, BadStringsNameTheFlag) {
  for (const char* bad : {"", " ", "a,b", "1,2,3,4", "0,0,0", "-1,2", "1,,2", "1e3", "98;2", "1.2.3"}) {
    try {
      split_documents(100, bad);
      ADD_FAILURE() << "accepted --split \"" << bad << "\"";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("--split"), std::string::npos) << e.what();
    }
  }
}

TEST(ShuffledIndex, IsAPermutationForEverySizeAndEpoch) {
  for (int64_t n : {1, 2, 3, 5, 16, 17, 100, 1000, 4099}) {
    for (int64_t epoch : {0, 1, 7}) {
      std::vector<char> hit(size_t(n), 0);
      for (int64_t j = 0; j < n; ++j) {
        int64_t k = shuffled_index(j, n, 1234, rng_stream("test"), epoch);
        ASSERT_TRUE(k >= 0 && k < n);
        EXPECT_FALSE(hit[size_t(k)]) << "n=" << n << " epoch=" << epoch;
        hit[size_t(k)] = 1;
      }
    }
  }
}

TEST(ShuffledIndex, DependsOnSeedStreamAndEpoch) {
  auto order = [](uint64_t seed, uint64_t stream, int64_t epoch) {
    std::vector<int64_t> v;
    for (int64_t j = 0; j < 200; ++j) v.push_back(shuffled_index(j, 200, seed, stream, epoch));
    return v;
  };
  std::vector<int64_t> identity(200);
  std::iota(identity.begin(), identity.end(), 0);
  auto base = order(1, 2, 0);
  EXPECT_EQ(base, order(1, 2, 0));
  EXPECT_NE(base, identity);
  EXPECT_NE(base, order(9, 2, 0));
  EXPECT_NE(base, order(1, 3, 0));
  EXPECT_NE(base, order(1, 2, 1));
}

TEST(MockGPTDataset, IsDeterministic) {
  MockGPTDataset a(1000, 32, 5), b(1000, 32, 5), c(1000, 32, 6);
  std::vector<int32_t> sa(33), sb(33), sc(33);
  bool any_differs = false;
  for (int64_t i : {int64_t(0), int64_t(1), int64_t(17), a.num_samples() - 1, a.num_samples() + 3}) {
    a.get(i, sa.data());
    b.get(i, sb.data());
    c.get(i, sc.data());
    EXPECT_EQ(sa, sb);
    any_differs |= sa != sc;
  }
  EXPECT_TRUE(any_differs);
}

TEST(MockGPTDataset, DocumentsCountUpAndEndWithEod) {
  const int64_t V = 50;
  MockGPTDataset m(V, 64, 1);
  EXPECT_EQ(m.eod(), V - 1);
  EXPECT_EQ(m.num_samples(), (m.stream_tokens() - 1) / 64);
  // Roughly 100000 documents of mean length 2048.
  EXPECT_GT(m.stream_tokens(), 190'000'000);
  EXPECT_LT(m.stream_tokens(), 220'000'000);
  std::vector<int32_t> s(65);
  int64_t eods = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    m.get(i, s.data());
    for (size_t t = 0; t < s.size(); ++t) {
      ASSERT_TRUE(s[t] >= 1 && s[t] < V) << s[t];
      if (t == 0) continue;
      int32_t prev = s[t - 1];
      if (s[t] == m.eod()) ++eods;
      else if (prev == m.eod()) ASSERT_EQ(s[t], 1);              // a new document starts at 1
      else ASSERT_EQ(s[t], prev % (V - 2) + 1);                  // counting, wrapping in [1, V-2]
    }
  }
  EXPECT_GT(eods, 0);
  EXPECT_THROW(MockGPTDataset(2, 64, 1), UserError);
}
