#pragma once
// Megatron-Core's BlendedDataset: samples drawn from several datasets in proportion to their
// weights, in Megatron's deterministic greedy order (build_blending_indices).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/gpt_dataset.h"

namespace mt {

// Megatron's blend list "[weight] prefix [weight] prefix ..." (--data-path and the per-split
// flags): prefixes with their weights, or (a list without numbers) prefixes with no weights.
struct Blend {
  std::vector<std::string> prefixes;
  std::vector<double> weights;  // empty: none given
};
// UserError naming `flag` for an odd mix of numbers and prefixes or a negative weight.
Blend parse_blend(const std::vector<std::string>& list, const std::string& flag);

// Weights divided by their sum (UserError if the sum is not positive).
std::vector<double> normalized_weights(const std::vector<double>& w);

// Samples to ask of each dataset for `size` blended samples: ceil(size * w * (1 + surplus)),
// Megatron's 0.5% surplus so that no dataset runs out.
std::vector<int64_t> samples_per_dataset(const std::vector<double>& normalized, int64_t size, double surplus = 0.005);

class BlendedDataset : public SampleSource {
 public:
  // `weights` are normalised here; all datasets must share seq_length.
  BlendedDataset(std::vector<std::unique_ptr<SampleSource>> datasets, std::vector<double> weights, int64_t size);
  int64_t num_samples() const override { return int64_t(dataset_index_.size()); }
  int64_t seq_length() const override { return datasets_[0]->seq_length(); }
  void get(int64_t i, int32_t* tokens) const override;  // i wraps modulo num_samples()
  int32_t loss_mask_token() const override { return datasets_[0]->loss_mask_token(); }

  const std::vector<int16_t>& dataset_index() const { return dataset_index_; }
  const std::vector<int64_t>& dataset_sample_index() const { return dataset_sample_index_; }
  const SampleSource& dataset(size_t d) const { return *datasets_[d]; }

 private:
  std::vector<std::unique_ptr<SampleSource>> datasets_;
  std::vector<double> weights_;
  std::vector<int16_t> dataset_index_;
  std::vector<int64_t> dataset_sample_index_;
};

}  // namespace mt
