// get_batch: Megatron's position ids and document masks (get_ltor_masks_and_position_ids) and
// context parallelism's load-balanced chunks (get_batch_on_this_cp_rank).
#include <gtest/gtest.h>

#include <vector>

#include "train/batch.h"

using namespace mt;

namespace {

// Sample i is i*100 + 0, 1, 2, ... with the end of document (7) at the given places.
class Samples : public SampleSource {
 public:
  Samples(int64_t seq, std::vector<int> eods) : seq_(seq), eods_(std::move(eods)) {}
  int64_t num_samples() const override { return 10; }
  int64_t seq_length() const override { return seq_; }
  void get(int64_t i, int32_t* t) const override {
    for (int64_t j = 0; j <= seq_; ++j) t[j] = int32_t(i * 100 + j + 10);
    for (int e : eods_) t[e] = 7;
  }
  int32_t loss_mask_token() const override { return 7; }

 private:
  int64_t seq_;
  std::vector<int> eods_;
};

std::vector<int32_t> ints(const Tensor& t) { return {t.data<int32_t>(), t.data<int32_t>() + t.numel()}; }

}  // namespace

TEST(GetBatch, ResetsPositionsAndDocumentsAfterEachEndOfDocument) {
  const Samples src(8, {2, 5});  // inputs: a b EOD c d EOD e f
  BatchLayout l;
  l.reset_position_ids = l.reset_attention_mask = true;
  l.eod = 7;
  const Batch b = get_batch(src, 0, 1, 8, Device::cpu(), l);
  ASSERT_TRUE(b.positions.defined());
  EXPECT_EQ(b.positions.seq, 8);
  EXPECT_EQ(ints(b.positions.seq_index), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  // The end of document belongs to the document it ends; the next token starts at position 0.
  EXPECT_EQ(ints(b.positions.position_ids), (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 0, 1}));
  EXPECT_EQ(ints(b.positions.document), (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  // Without the flags: no explicit positions at all (the GPT path as it was).
  EXPECT_FALSE(get_batch(src, 0, 1, 8, Device::cpu()).positions.defined());
  // Only --reset-position-ids: positions restart, one document.
  l.reset_attention_mask = false;
  const Batch p = get_batch(src, 0, 1, 8, Device::cpu(), l);
  EXPECT_EQ(ints(p.positions.position_ids), (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 0, 1}));
  EXPECT_FALSE(p.positions.document.defined());
}

TEST(GetBatch, ContextParallelRankTakesChunksRAndTwoCMinusOneMinusR) {
  const Samples src(16, {5});
  BatchLayout l;
  l.cp_size = 2;
  l.eod = 7;
  l.reset_attention_mask = true;
  const Batch full = get_batch(src, 3, 2, 16, Device::cpu());
  for (int r = 0; r < 2; ++r) {
    l.cp_rank = r;
    const Batch b = get_batch(src, 3, 2, 16, Device::cpu(), l);
    ASSERT_EQ(b.tokens.shape(), (Shape{2, 8}));
    // Chunks of 4: rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
    const std::vector<int> chunks = r == 0 ? std::vector<int>{0, 3} : std::vector<int>{1, 2};
    std::vector<int32_t> want_seq, want_doc;
    for (int s = 0; s < 2; ++s)
      for (int c : chunks)
        for (int i = 0; i < 4; ++i) {
          const int j = c * 4 + i;
          EXPECT_EQ(b.tokens.data<int32_t>()[s * 8 + int(want_seq.size() % 8)], full.tokens.data<int32_t>()[s * 16 + j]);
          EXPECT_EQ(b.labels.data<int32_t>()[s * 8 + int(want_seq.size() % 8)], full.labels.data<int32_t>()[s * 16 + j]);
          EXPECT_EQ(b.loss_mask.data<float>()[s * 8 + int(want_seq.size() % 8)], j == 5 ? 0.0f : 1.0f);
          want_seq.push_back(j);
          want_doc.push_back(j > 5 ? 1 : 0);
        }
    EXPECT_EQ(ints(b.positions.seq_index), want_seq) << r;
    EXPECT_EQ(ints(b.positions.document), want_doc) << r;
    // The runs place each chunk in the [B, S] token order (hidden dropout's coordinates).
    ASSERT_EQ(b.positions.runs.size(), 4u);
    EXPECT_EQ(b.positions.runs[1].local, 4);
    EXPECT_EQ(b.positions.runs[1].global, chunks[1] * 4);
    EXPECT_EQ(b.positions.runs[2].global, 16 + chunks[0] * 4);
    EXPECT_EQ(b.positions.runs[3].count, 4);
  }
}
