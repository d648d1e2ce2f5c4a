// Megatron-Core's GPTDataset and BlendedDataset indices: numpy's shuffle reproduced, the
// properties of the document/sample/shuffle indices, blend proportions, and the index cache.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/blended_dataset.h"
#include "data/dataset_indices.h"
#include "data/gpt_dataset.h"

namespace fs = std::filesystem;
using namespace mt;

namespace {

// 60 sequences of lengths 1..60 except sequence 7, which is empty; token value = its position
// in the whole stream, so a token says where it came from.
class GPTIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mt_gpti_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    ds_ = make_dataset("pos", 60, 0);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::shared_ptr<IndexedDataset> make_dataset(const std::string& name, int n, int32_t base) {
    std::string prefix = (dir_ / name).string();
    IndexedDatasetWriter w(prefix, 1 << 20);
    int32_t next = base;
    for (int d = 0; d < n; ++d) {
      std::vector<int32_t> doc;
      for (int k = 0; k < (d == 7 ? 0 : d + 1); ++k) doc.push_back(next++);
      w.add_document(doc);
    }
    w.finalize();
    return std::make_shared<IndexedDataset>(prefix);
  }
  GPTDatasetConfig config(int64_t L, uint64_t seed = 1234, std::string cache = "") {
    GPTDatasetConfig c;
    c.seq_length = L;
    c.seed = seed;
    c.cache_dir = cache;
    c.split = "test";
    return c;
  }
  fs::path dir_;
  std::shared_ptr<IndexedDataset> ds_;
};

std::vector<int32_t> sample(const SampleSource& s, int64_t i) {
  std::vector<int32_t> v(size_t(s.seq_length() + 1));
  s.get(i, v.data());
  return v;
}

}  // namespace

TEST(NumpyRandomState, ShuffleMatchesNumpy) {
  // numpy.random.RandomState(1234).shuffle(np.arange(10)), then np.arange(1000) with the same
  // generator; RandomState(7).shuffle(np.arange(3)).
  NumpyRandomState r(1234);
  std::vector<int32_t> a(10);
  std::iota(a.begin(), a.end(), 0);
  r.shuffle(std::span<int32_t>(a));
  EXPECT_EQ(a, (std::vector<int32_t>{7, 2, 9, 1, 0, 8, 4, 5, 6, 3}));
  std::vector<int64_t> b(1000);
  std::iota(b.begin(), b.end(), 0);
  r.shuffle(std::span<int64_t>(b));
  EXPECT_EQ(std::vector<int64_t>(b.begin(), b.begin() + 8), (std::vector<int64_t>{815, 496, 322, 623, 473, 765, 658, 89}));
  EXPECT_EQ(std::vector<int64_t>(b.end() - 4, b.end()), (std::vector<int64_t>{683, 30, 154, 233}));
  NumpyRandomState r7(7);
  std::vector<int32_t> c{0, 1, 2};
  r7.shuffle(std::span<int32_t>(c));
  EXPECT_EQ(c, (std::vector<int32_t>{2, 1, 0}));
}

TEST_F(GPTIndexTest, OneEpochUsesEveryTokenOnceAndSamplesShareOneToken) {
  const int64_t L = 16, tokens = ds_->num_tokens();
  const int64_t per_epoch = (tokens - 1) / L;
  GPTDataset gd(ds_, {0, 60}, per_epoch, config(L), Split::Train);
  ASSERT_EQ(gd.num_epochs(), 1);
  ASSERT_EQ(gd.num_samples(), per_epoch);
  // In sample-index order (unshuffled) the samples tile the shuffled document stream: sample
  // k's last token is sample k+1's first, and each token is a label at most once.
  auto si = gd.sample_index();
  std::multiset<int32_t> labels;
  std::vector<int32_t> prev;
  for (int64_t k = 0; k < per_epoch; ++k) {
    // The shuffle index is a permutation: find which i visits sample k.
    auto it = std::find(gd.shuffle_index().begin(), gd.shuffle_index().end(), k);
    ASSERT_NE(it, gd.shuffle_index().end());
    auto s = sample(gd, it - gd.shuffle_index().begin());
    ASSERT_EQ(s.size(), size_t(L + 1));
    if (!prev.empty()) {
      EXPECT_EQ(s.front(), prev.back()) << "sample " << k;
    }
    for (size_t j = 1; j < s.size(); ++j) labels.insert(s[j]);
    prev = s;
  }
  EXPECT_EQ(int64_t(labels.size()), per_epoch * L);
  EXPECT_EQ(std::set<int32_t>(labels.begin(), labels.end()).size(), labels.size()) << "a token was a label twice";
  EXPECT_EQ(si[0], 0);
  EXPECT_EQ(si[1], 0);
}

TEST_F(GPTIndexTest, DocumentIndexHoldsEachSequenceOncePerEpoch) {
  const int64_t L = 8, per_epoch = (ds_->num_tokens() - 1) / L;
  GPTDataset gd(ds_, {10, 50}, 3 * per_epoch, config(L), Split::Train);  // ~3.6 epochs of this range
  std::map<int32_t, int> count;
  for (int32_t d : gd.document_index()) count[d]++;
  ASSERT_EQ(count.size(), 40u);
  for (auto [d, c] : count) {
    EXPECT_GE(d, 10);
    EXPECT_LT(d, 50);
    EXPECT_EQ(c, gd.num_epochs());
  }
  // The shuffle index is a permutation of all samples.
  std::vector<int64_t> sh(gd.shuffle_index().begin(), gd.shuffle_index().end());
  std::sort(sh.begin(), sh.end());
  for (size_t i = 0; i < sh.size(); ++i) ASSERT_EQ(sh[i], int64_t(i));
  EXPECT_GE(gd.num_samples(), 3 * per_epoch);
}

TEST_F(GPTIndexTest, SeparateFinalEpochIsShuffledOnItsOwn) {
  // Ask for a little more than one epoch: the second epoch is needed only in part (< 80%), so
  // its documents are shuffled separately and come last, and its samples are shuffled last.
  const int64_t L = 8;
  int64_t tokens = 0;
  for (int64_t s = 0; s < 60; ++s) tokens += ds_->sequence_length(s);
  const int64_t per_epoch = (tokens - 1) / L;
  GPTDataset gd(ds_, {0, 60}, per_epoch + 5, config(L), Split::Train);
  ASSERT_EQ(gd.num_epochs(), 2);
  auto di = gd.document_index();
  std::set<int32_t> first(di.begin(), di.begin() + 60), second(di.begin() + 60, di.end());
  EXPECT_EQ(first.size(), 60u);
  EXPECT_EQ(second.size(), 60u);
  const int64_t sans_final = (tokens - 1) / L;
  auto sh = gd.shuffle_index();
  for (int64_t i = 0; i < sans_final; ++i) ASSERT_LT(sh[size_t(i)], sans_final);
  for (int64_t i = sans_final; i < int64_t(sh.size()); ++i) ASSERT_GE(sh[size_t(i)], sans_final);
}

TEST_F(GPTIndexTest, SameSeedSameSamplesOtherSeedOthers) {
  GPTDataset a(ds_, {0, 60}, 50, config(8, 1), Split::Train), b(ds_, {0, 60}, 50, config(8, 1), Split::Train);
  GPTDataset c(ds_, {0, 60}, 50, config(8, 2), Split::Train);
  int same_ab = 0, same_ac = 0;
  for (int64_t i = 0; i < 50; ++i) {
    same_ab += sample(a, i) == sample(b, i);
    same_ac += sample(a, i) == sample(c, i);
  }
  EXPECT_EQ(same_ab, 50);
  EXPECT_LT(same_ac, 10);
}

TEST_F(GPTIndexTest, IndicesAreCachedAndReusedWhenTheInputsMatch) {
  const std::string cache = (dir_ / "cache").string();
  GPTDataset a(ds_, {0, 60}, 100, config(8, 5, cache), Split::Valid);
  EXPECT_FALSE(a.loaded_from_cache());
  for (const char* f : {"document_index.npy", "sample_index.npy", "shuffle_index.npy", "description.txt"})
    EXPECT_TRUE(fs::exists(a.cache_prefix() + f)) << f;
  EXPECT_NE(a.cache_prefix().find("-GPTDataset-valid-"), std::string::npos);
  GPTDataset b(ds_, {0, 60}, 100, config(8, 5, cache), Split::Valid);
  EXPECT_TRUE(b.loaded_from_cache());
  EXPECT_TRUE(std::ranges::equal(a.document_index(), b.document_index()));
  EXPECT_TRUE(std::ranges::equal(a.sample_index(), b.sample_index()));
  EXPECT_TRUE(std::ranges::equal(a.shuffle_index(), b.shuffle_index()));
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(sample(a, i), sample(b, i));
  // Another seed is another key.
  GPTDataset c(ds_, {0, 60}, 100, config(8, 6, cache), Split::Valid);
  EXPECT_FALSE(c.loaded_from_cache());
  EXPECT_NE(c.cache_prefix(), a.cache_prefix());
  // A damaged cache file is rebuilt, not trusted.
  { std::ofstream(a.cache_prefix() + "shuffle_index.npy", std::ios::binary | std::ios::trunc) << "garbage"; }
  GPTDataset d(ds_, {0, 60}, 100, config(8, 5, cache), Split::Valid);
  EXPECT_FALSE(d.loaded_from_cache());
  EXPECT_TRUE(std::ranges::equal(a.shuffle_index(), d.shuffle_index()));
  GPTDataset e(ds_, {0, 60}, 100, config(8, 5, cache), Split::Valid);
  EXPECT_TRUE(e.loaded_from_cache());
}

TEST_F(GPTIndexTest, EmptySplitNamesItself) {
  try {
    GPTDataset gd(ds_, {7, 8}, 10, config(8), Split::Test);  // only the empty sequence
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("test split"), std::string::npos) << e.what();
  }
}

TEST_F(GPTIndexTest, EodMaskTokenNeedsAnEod) {
  GPTDatasetConfig c = config(8);
  c.eod_mask_loss = true;
  EXPECT_THROW(GPTDataset(ds_, {0, 60}, 10, c, Split::Train), UserError);
  c.eod = 5;
  GPTDataset gd(ds_, {0, 60}, 10, c, Split::Train);
  EXPECT_EQ(gd.loss_mask_token(), 5);
  c.eod_mask_loss = false;
  EXPECT_EQ(GPTDataset(ds_, {0, 60}, 10, c, Split::Train).loss_mask_token(), -1);
}

// Megatron's greedy keeps two datasets within one sample of their share at every prefix;
// with more datasets it can lag by a little more (up to ~1.5 samples; 2 is the bound tested).
TEST(BlendingIndices, ProportionsAreWithinOneSampleOfTheWeightsAtEveryPrefix) {
  for (std::vector<double> w : {std::vector<double>{0.3, 0.7}, {0.01, 0.99}, {0.5, 0.25, 0.25}, {0.01, 0.2, 0.79}, {1.0},
                                {0.1, 0.1, 0.1, 0.1, 0.1, 0.5}}) {
    const double bound = w.size() <= 2 ? 1.0 : 2.0;
    std::vector<int16_t> di;
    std::vector<int64_t> dsi;
    build_blending_indices(w, 5000, di, dsi);
    std::vector<int64_t> count(w.size(), 0);
    for (int64_t n = 0; n < 5000; ++n) {
      ASSERT_EQ(dsi[size_t(n)], count[size_t(di[size_t(n)])]) << "samples of a dataset are taken in order";
      count[size_t(di[size_t(n)])]++;
      for (size_t d = 0; d < w.size(); ++d)
        ASSERT_LE(std::abs(double(count[d]) - w[d] * double(n + 1)), bound) << "prefix " << n + 1 << " dataset " << d;
    }
  }
}

TEST(BlendingIndices, MatchMegatronsGreedyOrder) {
  // Megatron's build_blending_indices for weights (0.3, 0.7): the first sample goes to the
  // dataset with the larger weight (s is taken as max(s, 1)), ties go to the lower index.
  std::vector<double> w{0.3, 0.7};
  std::vector<int16_t> di;
  std::vector<int64_t> dsi;
  build_blending_indices(w, 10, di, dsi);
  EXPECT_EQ(di, (std::vector<int16_t>{1, 0, 1, 1, 0, 1, 1, 0, 1, 1}));
}

TEST(Blend, ParsesMegatronsWeightPrefixList) {
  Blend b = parse_blend({"0.3", "a", "0.7", "b"}, "--data-path");
  EXPECT_EQ(b.prefixes, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(b.weights, (std::vector<double>{0.3, 0.7}));
  Blend c = parse_blend({"a", "b"}, "--data-path");
  EXPECT_EQ(c.prefixes, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.weights.empty());
  EXPECT_THROW(parse_blend({"0.3", "a", "b"}, "--data-path"), UserError);
  EXPECT_THROW(parse_blend({"-1", "a"}, "--data-path"), UserError);
  EXPECT_EQ(normalized_weights({1, 3}), (std::vector<double>{0.25, 0.75}));
  EXPECT_EQ(samples_per_dataset({0.25, 0.75}, 1000), (std::vector<int64_t>{252, 754}));  // ceil(n w 1.005)
}

TEST_F(GPTIndexTest, BlendedDatasetDrawsFromEachDatasetByWeight) {
  auto other = make_dataset("other", 60, 100000);  // tokens >= 100000 tell the datasets apart
  std::vector<double> w = normalized_weights({1, 3});
  auto sizes = samples_per_dataset(w, 400);
  std::vector<std::unique_ptr<SampleSource>> parts;
  parts.push_back(std::make_unique<GPTDataset>(ds_, DocumentRange{0, 60}, sizes[0], config(8), Split::Train));
  parts.push_back(std::make_unique<GPTDataset>(other, DocumentRange{0, 60}, sizes[1], config(8), Split::Train));
  BlendedDataset b(std::move(parts), {1, 3}, 400);
  ASSERT_EQ(b.num_samples(), 400);
  int from_other = 0;
  for (int64_t i = 0; i < 400; ++i) {
    auto s = sample(b, i);
    bool o = s[0] >= 100000;
    EXPECT_EQ(o, b.dataset_index()[size_t(i)] == 1);
    from_other += o;
    EXPECT_EQ(s, sample(b.dataset(size_t(b.dataset_index()[size_t(i)])), b.dataset_sample_index()[size_t(i)]));
  }
  EXPECT_EQ(from_other, 300);
}
