#include "data/dataset_indices.h"

#include "core/error.h"

namespace mt {

uint64_t NumpyRandomState::interval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  for (int s = 1; s <= 32; s *= 2) mask |= mask >> s;
  uint64_t v;
  if (max <= 0xffffffffull) {
    do v = uint64_t(mt_()) & mask;
    while (v > max);
  } else {
    do {
      uint64_t hi = mt_();
      v = ((hi << 32) | uint64_t(mt_())) & mask;
    } while (v > max);
  }
  return v;
}

int64_t num_epochs_for(int64_t tokens_per_epoch, int64_t num_samples, int64_t seq_length, bool add_extra_token) {
  MT_CHECK(tokens_per_epoch > 0, "no tokens per epoch");
  const int64_t want = num_samples * seq_length + (add_extra_token ? 1 : 0);
  int64_t epochs = 1, tokens = tokens_per_epoch;
  while (tokens < want) {
    ++epochs;
    tokens += tokens_per_epoch;
  }
  return epochs;
}

std::vector<int32_t> build_document_index(std::span<const int32_t> documents, int64_t num_epochs,
                                          NumpyRandomState& rng, bool separate_final_epoch) {
  if (!separate_final_epoch || num_epochs == 1) {
    std::vector<int32_t> idx;
    idx.reserve(documents.size() * size_t(num_epochs));
    for (int64_t e = 0; e < num_epochs; ++e) idx.insert(idx.end(), documents.begin(), documents.end());
    rng.shuffle(std::span<int32_t>(idx));
    return idx;
  }
  std::vector<int32_t> first = build_document_index(documents, num_epochs - 1, rng, false);
  std::vector<int32_t> last = build_document_index(documents, 1, rng, false);
  first.insert(first.end(), last.begin(), last.end());
  return first;
}

std::vector<int64_t> build_sample_index(std::span<const int32_t> sizes, std::span<const int32_t> document_index,
                                        int64_t seq_length, int64_t num_epochs, int64_t tokens_per_epoch,
                                        bool drop_last_partial_sequence, bool add_extra_token) {
  const int64_t extra = add_extra_token ? 1 : 0;
  const int64_t total = num_epochs * tokens_per_epoch - extra;
  const int64_t num_samples = drop_last_partial_sequence ? total / seq_length : (total + seq_length - 1) / seq_length;
  std::vector<int64_t> idx(size_t(2 * (num_samples + 1)));
  int64_t doc_pos = 0, doc_offset = 0;
  idx[0] = 0;
  idx[1] = 0;
  for (int64_t s = 1; s <= num_samples; ++s) {
    int64_t remaining = seq_length + extra;
    while (remaining != 0) {
      const int64_t doc_length = sizes[size_t(document_index[size_t(doc_pos)])] - doc_offset;
      remaining -= doc_length;
      if (remaining <= 0) {
        doc_offset += remaining + doc_length - extra;
        remaining = 0;
      } else {
        if (doc_pos == int64_t(document_index.size()) - 1) {
          MT_CHECK(s == num_samples, "sample index ran out of documents at sample {} of {}", s, num_samples);
          doc_offset = sizes[size_t(document_index[size_t(doc_pos)])] - extra;
          break;
        }
        ++doc_pos;
        doc_offset = 0;
      }
    }
    idx[size_t(2 * s)] = doc_pos;
    idx[size_t(2 * s + 1)] = doc_offset;
  }
  return idx;
}

std::vector<int64_t> build_shuffle_index(int64_t num_samples, int64_t total_size, NumpyRandomState& rng) {
  std::vector<int64_t> idx(static_cast<size_t>(total_size));
  for (int64_t k = 0; k < total_size; ++k) idx[size_t(k)] = k;
  rng.shuffle(std::span<int64_t>(idx.data(), size_t(num_samples)));
  if (num_samples < total_size)
    rng.shuffle(std::span<int64_t>(idx.data() + num_samples, size_t(total_size - num_samples)));
  return idx;
}

void build_blending_indices(std::span<const double> weights, int64_t size, std::vector<int16_t>& dataset_index,
                            std::vector<int64_t>& dataset_sample_index) {
  MT_CHECK(!weights.empty() && weights.size() < 32768, "{} datasets to blend", weights.size());
  dataset_index.resize(size_t(size));
  dataset_sample_index.resize(size_t(size));
  std::vector<int64_t> count(weights.size(), 0);
  for (int64_t s = 0; s < size; ++s) {
    const double sd = s > 0 ? double(s) : 1.0;
    size_t best = 0;
    double best_err = weights[0] * sd - double(count[0]);
    for (size_t d = 1; d < weights.size(); ++d) {
      double err = weights[d] * sd - double(count[d]);
      if (err > best_err) {
        best_err = err;
        best = d;
      }
    }
    dataset_index[size_t(s)] = int16_t(best);
    dataset_sample_index[size_t(s)] = count[best]++;
  }
}

}  // namespace mt
