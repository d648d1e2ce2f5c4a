#include "data/blended_dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "data/dataset_indices.h"

namespace mt {
namespace {

bool parse_number(const std::string& s, double& v) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

Blend parse_blend(const std::vector<std::string>& list, const std::string& flag) {
  Blend b;
  // As Megatron's get_blend_from_list: an even-length list whose even entries are all numbers
  // is weight/prefix pairs; otherwise it is prefixes only.
  bool pairs = list.size() % 2 == 0 && !list.empty();
  std::vector<double> w;
  for (size_t i = 0; pairs && i < list.size(); i += 2) {
    double v;
    if (!parse_number(list[i], v)) pairs = false;
    else w.push_back(v);
  }
  if (pairs) {
    for (size_t i = 0; i < list.size(); i += 2) {
      if (!(w[i / 2] >= 0) || !std::isfinite(w[i / 2]))
        MT_USER_ERROR("{}: weight {} of {} must be a non-negative number", flag, list[i], list[i + 1]);
      double dummy;
      if (parse_number(list[i + 1], dummy))
        MT_USER_ERROR("{}: expected a dataset prefix after weight {}, got the number {}", flag, list[i], list[i + 1]);
      b.prefixes.push_back(list[i + 1]);
    }
    b.weights = w;
  } else {
    for (const auto& s : list) {
      double v;
      if (parse_number(s, v))
        MT_USER_ERROR("{}: \"{}\" looks like a weight, but the list is not weight/prefix pairs "
                      "(give \"W1 PREFIX1 W2 PREFIX2 ...\" or only prefixes)", flag, s);
      b.prefixes.push_back(s);
    }
  }
  for (const auto& p : b.prefixes)
    if (p.empty()) MT_USER_ERROR("{}: an empty dataset prefix (expected PREFIX of PREFIX.bin/.idx)", flag);
  return b;
}

std::vector<double> normalized_weights(const std::vector<double>& w) {
  // Scaled by the largest first, so weights near the top of double's range do not sum to infinity.
  double top = 0;
  for (double x : w) top = std::max(top, x);
  if (!(top > 0)) MT_USER_ERROR("the blend weights are all zero; at least one must be positive");
  double sum = 0;
  for (double x : w) sum += x / top;
  std::vector<double> n(w.size());
  for (size_t i = 0; i < w.size(); ++i) n[i] = w[i] / top / sum;
  return n;
}

std::vector<int64_t> samples_per_dataset(const std::vector<double>& normalized, int64_t size, double surplus) {
  std::vector<int64_t> n;
  for (double w : normalized) n.push_back(int64_t(std::ceil(double(size) * w * (1.0 + surplus))));
  return n;
}

BlendedDataset::BlendedDataset(std::vector<std::unique_ptr<SampleSource>> datasets, std::vector<double> weights,
                               int64_t size)
    : datasets_(std::move(datasets)), weights_(normalized_weights(weights)) {
  MT_CHECK(!datasets_.empty() && datasets_.size() == weights_.size(), "{} datasets, {} weights", datasets_.size(),
           weights_.size());
  for (const auto& d : datasets_)
    MT_CHECK(d->seq_length() == datasets_[0]->seq_length(), "blended datasets of different sequence lengths");
  MT_CHECK(size > 0, "blended size {}", size);
  build_blending_indices(weights_, size, dataset_index_, dataset_sample_index_);
}

void BlendedDataset::get(int64_t i, int32_t* tokens) const {
  MT_CHECK(i >= 0, "negative sample index {}", i);
  const size_t k = size_t(i % num_samples());
  datasets_[size_t(dataset_index_[k])]->get(dataset_sample_index_[k], tokens);
}

}  // namespace mt
