#include "model/rotary.h"

#include <algorithm>
#include <cmath>

#include "kernels/embedding.h"

namespace mt {

namespace {

// YaRN's frequencies (rotary.h), in fp32 where the references are.
std::vector<float> yarn_frequencies(const TransformerConfig& cfg) {
  const int R = cfg.rotary_dim();
  const double pi = std::acos(-1.0), base = cfg.rotary_base, L = cfg.original_max_position_embeddings;
  auto correction_dim = [&](double rotations) { return R * std::log(L / (rotations * 2 * pi)) / (2 * std::log(base)); };
  const double lo = std::max(std::floor(correction_dim(cfg.beta_fast)), 0.0);
  double hi = std::min(std::ceil(correction_dim(cfg.beta_slow)), double(R - 1));
  if (lo == hi) hi += 0.001;
  std::vector<float> f(size_t(R / 2));
  for (int i = 0; i < R / 2; ++i) {
    const float pos = std::pow(cfg.rotary_base, float(2 * i) / float(R));
    const float extra = 1.0f / pos, inter = 1.0f / (cfg.rotary_scaling_factor * pos);
    const float ramp = std::clamp((float(i) - float(lo)) / float(hi - lo), 0.0f, 1.0f);
    const float keep = 1.0f - ramp;
    f[size_t(i)] = inter * (1.0f - keep) + extra * keep;
  }
  return f;
}

}  // namespace

double yarn_get_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

float rope_table_scale(const TransformerConfig& cfg) {
  if (cfg.rope_type != RopeType::Yarn) return 1.0f;
  return float(yarn_get_mscale(cfg.rotary_scaling_factor, cfg.mscale) /
               yarn_get_mscale(cfg.rotary_scaling_factor, cfg.mscale_all_dim));
}

std::vector<float> rope_frequencies(const TransformerConfig& cfg) {
  if (cfg.rope_type == RopeType::Yarn) return yarn_frequencies(cfg);
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
  const float m = rope_table_scale(cfg);  // 1 but for YaRN (a product by 1 changes no bits)
  Tensor c = Tensor::empty({seq, half}, DType::F32), s = Tensor::empty({seq, half}, DType::F32);
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t i = 0; i < half; ++i) {
      // The angle as Hugging Face forms it (fp32 position x fp32 frequency), then cos/sin in double.
      const float angle = float(t) * f[size_t(i)];
      c.data<float>()[t * half + i] = float(std::cos(double(angle))) * m;
      s.data<float>()[t * half + i] = float(std::sin(double(angle))) * m;
    }
  return {c.to(device), s.to(device)};
}

// The embedding kernel as a row gather.
RotaryTables rope_rows(const RotaryTables& tables, const Tensor& positions) {
  const int64_t n = positions.numel(), half = tables.cos.size(1);
  RotaryTables r;
  r.cos = Tensor::empty({1, n, half}, DType::F32, tables.cos.device());
  r.sin = Tensor::empty({1, n, half}, DType::F32, tables.cos.device());
  embedding_forward(positions.view({1, n}), tables.cos, nullptr, 0, r.cos);
  embedding_forward(positions.view({1, n}), tables.sin, nullptr, 0, r.sin);
  r.cos = r.cos.view({n, half});
  r.sin = r.sin.view({n, half});
  r.per_token = true;
  return r;
}

}  // namespace mt
