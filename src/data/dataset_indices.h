#pragma once
// The index arithmetic of Megatron-Core's GPTDataset and BlendedDataset
// (megatron/core/datasets/gpt_dataset.py, blended_dataset.py, helpers.cpp), reproduced so that
// the same inputs and seed give the same indices as Megatron (its numpy RandomState included).
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace mt {

// numpy.random.RandomState(seed): MT19937 seeded like init_genrand, with RandomState.shuffle's
// algorithm (Fisher-Yates from the end, bounded draws by masked rejection).
class NumpyRandomState {
 public:
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}
  // A uniform integer in [0, max] (numpy's random_interval).
  uint64_t interval(uint64_t max);
  template <class T> void shuffle(std::span<T> a) {
    for (size_t i = a.size(); i-- > 1;) std::swap(a[i], a[size_t(interval(i))]);
  }

 private:
  std::mt19937 mt_;
};

// Epochs of `tokens_per_epoch` tokens needed for num_samples samples of seq_length (+ the
// extra token): the smallest e with e * tokens_per_epoch >= num_samples * seq_length + extra.
int64_t num_epochs_for(int64_t tokens_per_epoch, int64_t num_samples, int64_t seq_length, bool add_extra_token);

// Megatron's document index: the `documents` (sequence ids) repeated num_epochs times and
// shuffled; with separate_final_epoch the last epoch is shuffled on its own, after the others.
std::vector<int32_t> build_document_index(std::span<const int32_t> documents, int64_t num_epochs,
                                          NumpyRandomState& rng, bool separate_final_epoch);

// helpers.cpp build_sample_idx: entry k (k = 0 .. num_samples) is (position in the document
// index, token offset in that document) where sample k starts; sample k ends where sample k + 1
// starts, plus the extra token. Returned flat: [2 * (num_samples + 1)].
std::vector<int64_t> build_sample_index(std::span<const int32_t> sizes, std::span<const int32_t> document_index,
                                        int64_t seq_length, int64_t num_epochs, int64_t tokens_per_epoch,
                                        bool drop_last_partial_sequence, bool add_extra_token);

// _build_shuffle_index: [0, num_samples) shuffled, then [num_samples, total_size) shuffled.
std::vector<int64_t> build_shuffle_index(int64_t num_samples, int64_t total_size, NumpyRandomState& rng);

// helpers.cpp build_blending_indices: sample s goes to the dataset d maximising
// weights[d] * max(s, 1) - count[d] (the first such d on ties); dataset_sample_index[s] is
// count[d] before the increment.
void build_blending_indices(std::span<const double> weights, int64_t size, std::vector<int16_t>& dataset_index,
                            std::vector<int64_t>& dataset_sample_index);

}  // namespace mt
