// GPT samples: Megatron's --split arithmetic, windows over a split's token stream visited in a
// per-epoch shuffled order, and the mock data.
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

// A dataset whose token values are their position in the whole stream: 40 documents of
// lengths 1..40 except document 7, which is empty. Vocabulary 1<<20, so tokens are int32.
class WindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mt_gpt_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::string prefix = (dir_ / "pos").string();
    IndexedDatasetWriter w(prefix, 1 << 20);
    int32_t next = 0;
    for (int d = 0; d < 40; ++d) {
      std::vector<int32_t> doc;
      for (int k = 0; k < (d == 7 ? 0 : d + 1); ++k) doc.push_back(next++);
      w.add_document(doc);
    }
    w.finalize();
    ds_ = IndexedDataset::open(prefix);
  }
  void TearDown() override {
    ds_.reset();
    fs::remove_all(dir_);
  }
  // The first token (= stream position in the whole dataset) of document d.
  int32_t first_token(int64_t d) {
    for (int64_t e = d; e < ds_->num_documents(); ++e)
      if (ds_->sequence_length(e) > 0) return ds_->read(e)[0];
    return int32_t(ds_->num_tokens());
  }

  fs::path dir_;
  std::unique_ptr<IndexedDataset> ds_;
};

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

TEST_F(WindowTest, WindowsAreConsecutiveSliceOfTheStreamSharingOneToken) {
  const int64_t L = 16;
  GPTWindowDataset gd(*ds_, {3, 30}, L, 42, "train");
  const int32_t base = first_token(3);
  EXPECT_EQ(gd.stream_tokens(), first_token(30) - base);
  EXPECT_EQ(gd.num_samples(), (gd.stream_tokens() - 1) / L);
  std::vector<int32_t> s(L + 1);
  for (int64_t i = 0; i < gd.num_samples(); ++i) {
    gd.get(i, s.data());
    const int64_t w = gd.window_of(i);
    for (int64_t t = 0; t <= L; ++t) ASSERT_EQ(s[t], base + w * L + t) << "sample " << i;
  }
  // Windows w and w+1 overlap in exactly the one token at (w+1)*L.
  std::vector<int32_t> a(L + 1), b(L + 1);
  gd.read_stream(0, L + 1, a.data());
  gd.read_stream(L, L + 1, b.data());
  EXPECT_EQ(a.back(), b.front());
  EXPECT_EQ(std::set<int32_t>(a.begin(), a.end()).count(b[1]), 0u);
}

TEST_F(WindowTest, EveryTokenIsALabelOncePerEpoch) {
  const int64_t L = 8;
  GPTWindowDataset gd(*ds_, {0, 40}, L, 7, "train");
  const int64_t W = gd.num_samples();
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int> label_count(size_t(gd.stream_tokens()), 0);
    std::vector<int32_t> s(L + 1);
    for (int64_t i = epoch * W; i < (epoch + 1) * W; ++i) {
      gd.get(i, s.data());
      for (int64_t t = 1; t <= L; ++t) label_count[size_t(s[t])]++;
    }
    // Positions 1 .. W*L are labels exactly once; the tail after them is shorter than L.
    for (int64_t p = 1; p <= W * L; ++p) ASSERT_EQ(label_count[size_t(p)], 1) << "position " << p;
    EXPECT_LT(gd.stream_tokens() - 1 - W * L, L);
  }
}

TEST_F(WindowTest, ShuffleIsAPermutationThatChangesEachEpoch) {
  GPTWindowDataset gd(*ds_, {0, 40}, 4, 3, "train");
  const int64_t W = gd.num_samples();
  ASSERT_GT(W, 100);
  std::vector<std::vector<int64_t>> orders;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> o;
    for (int64_t j = 0; j < W; ++j) o.push_back(gd.window_of(epoch * W + j));
    std::vector<int64_t> sorted = o;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t j = 0; j < W; ++j) ASSERT_EQ(sorted[size_t(j)], j);
    orders.push_back(o);
  }
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
}

TEST_F(WindowTest, SameSeedSameOrderOtherSeedOrSplitAnother) {
  GPTWindowDataset a(*ds_, {0, 40}, 4, 3, "train"), b(*ds_, {0, 40}, 4, 3, "train");
  GPTWindowDataset c(*ds_, {0, 40}, 4, 4, "train"), d(*ds_, {0, 40}, 4, 3, "valid");
  std::vector<int64_t> oa, ob, oc, od;
  for (int64_t i = 0; i < 2 * a.num_samples(); ++i) {
    oa.push_back(a.window_of(i));
    ob.push_back(b.window_of(i));
    oc.push_back(c.window_of(i));
    od.push_back(d.window_of(i));
  }
  EXPECT_EQ(oa, ob);
  EXPECT_NE(oa, oc);
  EXPECT_NE(oa, od);
}

TEST_F(WindowTest, StreamCrossesEmptyDocuments) {
  GPTWindowDataset gd(*ds_, {6, 9}, 4, 0, "train");  // documents of 7, 0 and 9 tokens
  std::vector<int32_t> all(size_t(gd.stream_tokens()));
  gd.read_stream(0, gd.stream_tokens(), all.data());
  ASSERT_EQ(all.size(), 16u);
  for (size_t k = 0; k < all.size(); ++k) EXPECT_EQ(all[k], first_token(6) + int32_t(k));
}

TEST_F(WindowTest, TooFewTokensNamesTheSplit) {
  // Documents 0..2 hold 1 + 2 + 3 = 6 tokens: one sample of 8 + 1 does not fit.
  try {
    GPTWindowDataset gd(*ds_, {0, 3}, 8, 0, "valid");
    FAIL() << "built a dataset with too few tokens";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("valid"), std::string::npos) << e.what();
  }
  EXPECT_THROW(GPTWindowDataset(*ds_, {5, 5}, 8, 0, "test"), UserError);
  EXPECT_NO_THROW(GPTWindowDataset(*ds_, {0, 3}, 5, 0, "valid"));  // exactly 6 = 5 + 1 tokens
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
