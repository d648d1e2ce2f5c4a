#include "model/rotary.h"

#include <cmath>

namespace mt {

std::vector<float> rope_frequencies(const TransformerConfig& cfg) {
  const int R = cfg.rotary_dim();
  std::vector<float> f(size_t(R / 2));
  for (int i = 0; i < R / 2; ++i) {
    // Hugging Face: 1 / base ** (arange(0, R, 2).float() / R), in fp32.
    const float expo = float(2 * i) / float(R);
    f[size_t(i)] = 1.0f / std::pow(cfg.rotary_base, expo);
  }
  if (!cfg.rope_scaling) return f;
  constexpr double kOriginalContext = 8192, kLowFreqFactor = 1, kHighFreqFactor = 4;
  const double low_wavelen = kOriginalContext / kLowFreqFactor, high_wavelen = kOriginalContext / kHighFreqFactor;
  const double pi = std::acos(-1.0), s = cfg.rope_scaling_factor;
  for (float& fi : f) {
    const double wavelen = 2 * pi / double(fi);
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      fi = float(double(fi) / s);
      continue;
    }
    const double smooth = (kOriginalContext / wavelen - kLowFreqFactor) / (kHighFreqFactor - kLowFreqFactor);
    fi = float((1 - smooth) * double(fi) / s + smooth * double(fi));
  }
  return f;
}

RotaryTables rope_tables(const TransformerConfig& cfg, int64_t seq, Device device) {
  const std::vector<float> f = rope_frequencies(cfg);
  const int64_t half = int64_t(f.size());
  Tensor c = Tensor::empty({seq, half}, DType::F32), s = Tensor::empty({seq, half}, DType::F32);
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t i = 0; i < half; ++i) {
      // The angle as Hugging Face forms it (fp32 position x fp32 frequency), then cos/sin in double.
      const float angle = float(t) * f[size_t(i)];
      c.data<float>()[t * half + i] = float(std::cos(double(angle)));
      s.data<float>()[t * half + i] = float(std::sin(double(angle)));
    }
  return {c.to(device), s.to(device)};
}

}  // namespace mt
