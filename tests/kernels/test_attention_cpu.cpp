// CPU attention at the model's head size and across several key blocks (T = 200 > 3 blocks of
// 64, D = 64), forward and backward, with and without dropout, multi-head and grouped-query
// (query head h reads key and value head h / (H/G)), against the attention math in double:
// P = softmax(scale Q K^T + causal mask), O = (P Z) V; dV = (P Z)^T dO, dP = dO V^T,
// dS = P (dP Z - rowsum(dO O)), dQ = scale dS K, dK = scale dS^T Q, where a shared key or value
// head sums the dK, dV of its group's query heads. (test_attention.cpp checks the small shapes
// against finite differences.) Tolerance 2e-5 relative + absolute: fp32 products of length
// <= 200 over values of order 1. A set softmax_scale (multi-latent attention's) replaces 1/sqrt(D)
// as `scale` everywhere above.
#include "core/rng.h"
#include "kernels/attention.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

struct CpuCase {
  int64_t H, G;
  float dropout_p;
  float softmax_scale = 0.0f;  // 0: 1/sqrt(D)
};

class AttentionCpu : public ::testing::TestWithParam<CpuCase> {};

TEST_P(AttentionCpu, MatchesDoublePrecisionForwardAndBackwardAcrossBlocks) {
  const auto [H, G, p, softmax_scale] = GetParam();
  const int64_t B = 1, T = 200, D = 64, hpg = H / G;
  AttentionConfig cfg{int(H), int(D), p, /*seed=*/7, /*stream=*/rng_stream("test/attention_cpu")};
  cfg.n_query_groups = int(G);
  cfg.softmax_scale = softmax_scale;
  const Shape qkv_shape{B, T, G, hpg + 2, D};
  const auto x = random_vec(size_t(B * T * (H + 2 * G) * D), 1, -1, 1), g = random_vec(size_t(B * T * H * D), 2);
  Tensor qkv = from_vec(x, qkv_shape), out = Tensor::empty({B, T, H, D}, DType::F32);
  Tensor lse = Tensor::empty({B, H, T}, DType::F32), dqkv = Tensor::empty(qkv_shape, DType::F32);
  attention_forward(qkv, out, lse, cfg);
  attention_backward(from_vec(g, {B, T, H, D}), qkv, out, lse, dqkv, cfg);

  std::vector<double> want_out(size_t(B * T * H * D)), want_lse(size_t(B * H * T)), want_d(x.size(), 0.0);
  const double scale = softmax_scale > 0 ? double(softmax_scale) : 1 / std::sqrt(double(D));
  // Element (t, c) of query head h (which = 0) or of its group's key (1) or value (2) head.
  auto index = [&](int64_t t, int64_t h, int64_t which, int64_t c) {
    const int64_t slot = which == 0 ? h % hpg : hpg + which - 1;
    return size_t(((t * G + h / hpg) * (hpg + 2) + slot) * D + c);
  };
  auto at = [&](int64_t t, int64_t h, int64_t which, int64_t c) { return double(x[index(t, h, which, c)]); };
  auto grad_out = [&](int64_t t, int64_t h, int64_t c) { return double(g[size_t((t * H + h) * D + c)]); };
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> P(size_t(T * T), 0.0), Z(size_t(T * T), 0.0), dS(size_t(T * T), 0.0);
    for (int64_t i = 0; i < T; ++i) {
      double m = -1e300;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t c = 0; c < D; ++c) s += at(i, h, 0, c) * at(j, h, 1, c);
        P[i * T + j] = s * scale;
        m = std::max(m, P[i * T + j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j) sum += std::exp(P[i * T + j] - m);
      want_lse[size_t(h * T + i)] = m + std::log(sum);
      for (int64_t j = 0; j <= i; ++j) {
        P[i * T + j] = std::exp(P[i * T + j] - want_lse[size_t(h * T + i)]);
        const uint64_t idx = uint64_t((h * T + i) * T + j);
        Z[i * T + j] = p == 0 ? 1.0 : philox_uniform(cfg.seed, cfg.stream, idx) > p ? 1.0 / (1.0 - p) : 0.0;
      }
      for (int64_t c = 0; c < D; ++c) {
        double o = 0;
        for (int64_t j = 0; j <= i; ++j) o += P[i * T + j] * Z[i * T + j] * at(j, h, 2, c);
        want_out[size_t((i * H + h) * D + c)] = o;
      }
    }
    for (int64_t i = 0; i < T; ++i) {
      double delta = 0;
      for (int64_t c = 0; c < D; ++c) delta += grad_out(i, h, c) * want_out[size_t((i * H + h) * D + c)];
      for (int64_t j = 0; j <= i; ++j) {
        double dp = 0;
        for (int64_t c = 0; c < D; ++c) dp += grad_out(i, h, c) * at(j, h, 2, c);
        dS[i * T + j] = P[i * T + j] * (dp * Z[i * T + j] - delta);
      }
    }
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < D; ++c) {
        double dq = 0, dk = 0, dv = 0;
        for (int64_t j = 0; j <= t; ++j) dq += dS[t * T + j] * at(j, h, 1, c);
        for (int64_t i = t; i < T; ++i) {
          dk += dS[i * T + t] * at(i, h, 0, c);
          dv += P[i * T + t] * Z[i * T + t] * grad_out(i, h, c);
        }
        want_d[index(t, h, 0, c)] = scale * dq;
        want_d[index(t, h, 1, c)] += scale * dk;  // summed over the group's query heads
        want_d[index(t, h, 2, c)] += dv;
      }
  }
  expect_close(to_vec(out), want_out, 2e-5, 2e-5, "out");
  expect_close(to_vec(lse), want_lse, 2e-5, 2e-5, "lse");
  expect_close(to_vec(dqkv), want_d, 2e-5, 2e-5, "dqkv");
}

std::string cpu_case_name(const ::testing::TestParamInfo<CpuCase>& info) {
  std::string name = "H";  // appended piecewise: GCC 12 warns (-Wrestrict) on "H" + std::string
  name += std::to_string(info.param.H) + "_G" + std::to_string(info.param.G);
  if (info.param.dropout_p > 0) name += "_dropout";
  if (info.param.softmax_scale > 0) name += "_scaled";
  return name;
}

INSTANTIATE_TEST_SUITE_P(HeadsGroupsAndDropout, AttentionCpu,
                         ::testing::Values(CpuCase{2, 2, 0.0f}, CpuCase{2, 2, 0.2f}, CpuCase{8, 2, 0.0f},
                                           CpuCase{8, 2, 0.2f}, CpuCase{8, 1, 0.0f}, CpuCase{8, 1, 0.2f},
                                           CpuCase{2, 2, 0.0f, 0.3f}, CpuCase{8, 2, 0.2f, 0.3f}),
                         cpu_case_name);

}  // namespace
}  // namespace mt
