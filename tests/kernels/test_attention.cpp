// Causal attention against an explicit double-precision softmax(Q K^T * scale + causal mask) V
// (with the same Philox dropout mask), backward against central finite differences of
// L = sum(out * G) taken on that reference, and thread-count determinism. Grouped-query
// attention (G < H query groups sharing a key and value head) against the same reference and
// against multi-head attention on K, V repeated per query head; the dropout mask's global
// coordinates: a slice of heads or samples run alone draws the full run's mask.
#include <array>
#include <string>

#include "core/rng.h"
#include "kernels/attention.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

struct Dims {
  int64_t B, T, H, D;
  int64_t G = 0;  // query groups (0: H)
  int64_t groups() const { return G > 0 ? G : H; }
  int64_t per_group() const { return H / groups(); }
  Shape qkv() const { return {B, T, groups(), per_group() + 2, D}; }
  Shape out() const { return {B, T, H, D}; }
  Shape lse() const { return {B, H, T}; }
  int64_t n_qkv() const { return B * T * (H + 2 * groups()) * D; }
  int64_t n_out() const { return B * T * H * D; }
};

AttentionConfig config(const Dims& d, float p) {
  AttentionConfig cfg{int(d.H), int(d.D), p, /*seed=*/42, /*stream=*/rng_stream("test/attention")};
  cfg.n_query_groups = int(d.G);
  return cfg;
}

// out [B, T, H, D] and lse [B, H, T] of causal attention over qkv [B, T, G, H/G + 2, D], in
// double; query head h reads key and value head h / (H/G); dropout from cfg's global coordinates.
void reference(const std::vector<double>& qkv, const Dims& d, const AttentionConfig& cfg, std::vector<double>& out,
               std::vector<double>& lse) {
  out.assign(size_t(d.n_out()), 0);
  lse.assign(size_t(d.B * d.H * d.T), 0);
  const double scale = 1 / std::sqrt(double(d.D));
  const int64_t hpg = d.per_group(), H_mask = cfg.total_heads > 0 ? cfg.total_heads : d.H;
  // which: 0 = query head h, 1 = its key head, 2 = its value head.
  auto at = [&](int64_t b, int64_t t, int64_t h, int64_t which, int64_t c) {
    const int64_t slot = which == 0 ? h % hpg : hpg + which - 1;
    return qkv[size_t((((b * d.T + t) * d.groups() + h / hpg) * (hpg + 2) + slot) * d.D + c)];
  };
  std::vector<double> s(size_t(d.T));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.T; ++i) {
        double m = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          s[j] = 0;
          for (int64_t c = 0; c < d.D; ++c) s[j] += at(b, i, h, 0, c) * at(b, j, h, 1, c);
          s[j] *= scale;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[j] - m);
        const double l = m + std::log(sum);
        lse[size_t((b * d.H + h) * d.T + i)] = l;
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t row = (cfg.batch_offset + b) * H_mask + cfg.head_offset + h;
          const uint64_t idx = uint64_t((row * d.T + i) * d.T + j);
          const double z = cfg.dropout_p == 0                                          ? 1.0
                           : philox_uniform(cfg.seed, cfg.stream, idx) > cfg.dropout_p ? 1.0 / (1.0 - cfg.dropout_p)
                                                                                       : 0.0;
          const double pz = std::exp(s[j] - l) * z;
          for (int64_t c = 0; c < d.D; ++c) out[size_t(((b * d.T + i) * d.H + h) * d.D + c)] += pz * at(b, j, h, 2, c);
        }
      }
}

struct ForwardCase {
  DType dtype;
  float dropout_p;
};

class AttentionForward : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(AttentionForward, MatchesExplicitCausalSoftmaxInDouble) {
  const auto [dt, p] = GetParam();
  const Dims d{2, 70, 3, 8};  // T > 64 crosses a key block of the online softmax
  const AttentionConfig cfg = config(d, p);
  const auto x = rounded(random_vec(size_t(d.n_qkv()), 1, -2, 2), dt);
  Tensor out = Tensor::empty(d.out(), dt), lse = Tensor::empty(d.lse(), DType::F32);
  attention_forward(from_vec(x, d.qkv(), dt), out, lse, cfg);
  std::vector<double> rout, rlse;
  reference(to_double(x), d, cfg, rout, rlse);
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;  // half: the rounding of the stored output
  expect_close(to_vec(out), rout, tol, tol, "out");
  expect_close(to_vec(lse), rlse, 1e-5, 1e-5, "lse");
}

INSTANTIATE_TEST_SUITE_P(DtypesAndDropout, AttentionForward,
                         ::testing::Values(ForwardCase{DType::F32, 0.0f}, ForwardCase{DType::BF16, 0.0f},
                                           ForwardCase{DType::F16, 0.0f}, ForwardCase{DType::F32, 0.25f}));

class AttentionBackward : public ::testing::TestWithParam<float> {};

// dqkv against central differences of the double-precision reference, for the loss <out, g>.
void backward_matches_finite_differences(const Dims& d, float p, uint32_t seed) {
  const AttentionConfig cfg = config(d, p);
  const auto x = random_vec(size_t(d.n_qkv()), seed, -1.5, 1.5), g = random_vec(size_t(d.n_out()), seed + 1);
  Tensor qkv = from_vec(x, d.qkv()), out = Tensor::empty(d.out(), DType::F32), lse = Tensor::empty(d.lse(), DType::F32);
  attention_forward(qkv, out, lse, cfg);
  Tensor dqkv = Tensor::empty(d.qkv(), DType::F32);
  attention_backward(from_vec(g, d.out()), qkv, out, lse, dqkv, cfg);

  auto loss = [&](const std::vector<double>& v) {
    std::vector<double> o, l;
    reference(v, d, cfg, o, l);
    double sum = 0;
    for (size_t i = 0; i < o.size(); ++i) sum += o[i] * g[i];
    return sum;
  };
  std::vector<double> v = to_double(x), fd(v.size());
  for (size_t i = 0; i < v.size(); ++i) fd[i] = central_difference(v, i, 1e-4, loss);
  expect_close(to_vec(dqkv), fd, 1e-3, 1e-4, "dqkv");
}

TEST_P(AttentionBackward, MatchesFiniteDifferences) {
  backward_matches_finite_differences(Dims{2, 10, 2, 4}, GetParam(), 2);
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutDropout, AttentionBackward, ::testing::Values(0.0f, 0.3f));

TEST(AttentionBackward, Bf16AgreesWithFp32) {
  const Dims d{1, 33, 2, 16};
  const AttentionConfig cfg = config(d, 0.1f);
  const auto x = rounded(random_vec(size_t(d.n_qkv()), 4, -1, 1), DType::BF16);
  const auto g = rounded(random_vec(size_t(d.n_out()), 5), DType::BF16);
  std::vector<float> grads[2];
  const DType dts[2] = {DType::F32, DType::BF16};
  for (int k = 0; k < 2; ++k) {
    Tensor qkv = from_vec(x, d.qkv(), dts[k]), out = Tensor::empty(d.out(), dts[k]);
    Tensor lse = Tensor::empty(d.lse(), DType::F32), dqkv = Tensor::empty(d.qkv(), dts[k]);
    attention_forward(qkv, out, lse, cfg);
    attention_backward(from_vec(g, d.out(), dts[k]), qkv, out, lse, dqkv, cfg);
    grads[k] = to_vec(dqkv);
  }
  expect_close(grads[1], grads[0], 2e-2, 2e-2, "bf16 dqkv");  // bf16 output and stored O feed D_i
}

TEST(AttentionBackward, IsBitIdenticalForOneAndTwoThreads) {
  const Dims d{2, 64, 3, 16};
  const AttentionConfig cfg = config(d, 0.1f);
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 6), dout = random_tensor(d.out(), DType::F32, 7);
  Tensor out[2], lse[2], dqkv[2];
  for (int t = 0; t < 2; ++t) {
    out[t] = Tensor::empty(d.out(), DType::F32);
    lse[t] = Tensor::empty(d.lse(), DType::F32);
    dqkv[t] = Tensor::empty(d.qkv(), DType::F32);
    with_threads(t + 1, [&] {
      attention_forward(qkv, out[t], lse[t], cfg);
      attention_backward(dout, qkv, out[t], lse[t], dqkv[t], cfg);
    });
  }
  EXPECT_TRUE(bitwise_equal(out[0], out[1]));
  EXPECT_TRUE(bitwise_equal(lse[0], lse[1]));
  EXPECT_TRUE(bitwise_equal(dqkv[0], dqkv[1]));
}

// The block [r[k][0], r[k][0] + r[k][1]) of each dim k of a row-major array of shape `shape`.
std::vector<float> block(const std::vector<float>& x, const Shape& shape,
                         const std::vector<std::array<int64_t, 2>>& r) {
  std::vector<float> y;
  auto walk = [&](auto&& self, size_t k, int64_t offset) -> void {
    if (k == shape.size()) {
      y.push_back(x[size_t(offset)]);
      return;
    }
    for (int64_t i = r[k][0]; i < r[k][0] + r[k][1]; ++i) self(self, k + 1, offset * shape[k] + i);
  };
  walk(walk, 0, 0);
  return y;
}

// qkv [B, T, G, H/G + 2, D] with each group's key and value heads repeated for its query heads:
// multi-head attention's [B, T, H, 3, D].
std::vector<float> repeat_kv(const std::vector<float>& x, const Dims& d) {
  std::vector<float> y(size_t(d.B * d.T * d.H * 3 * d.D));
  const int64_t hpg = d.per_group();
  for (int64_t bt = 0; bt < d.B * d.T; ++bt)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t which = 0; which < 3; ++which) {
        const int64_t slot = which == 0 ? h % hpg : hpg + which - 1;
        for (int64_t c = 0; c < d.D; ++c)
          y[size_t(((bt * d.H + h) * 3 + which) * d.D + c)] =
              x[size_t(((bt * d.groups() + h / hpg) * (hpg + 2) + slot) * d.D + c)];
      }
  return y;
}

struct GqaCase {
  DType dtype;
  int64_t G;
  float dropout_p;
};

class GroupedQueryAttention : public ::testing::TestWithParam<GqaCase> {};

TEST_P(GroupedQueryAttention, ForwardMatchesExplicitSoftmaxOnSharedKeysInDouble) {
  const auto [dt, G, p] = GetParam();
  const Dims d{2, 70, 8, 16, G};
  const AttentionConfig cfg = config(d, p);
  const auto x = rounded(random_vec(size_t(d.n_qkv()), 11, -2, 2), dt);
  Tensor out = Tensor::empty(d.out(), dt), lse = Tensor::empty(d.lse(), DType::F32);
  attention_forward(from_vec(x, d.qkv(), dt), out, lse, cfg);
  std::vector<double> rout, rlse;
  reference(to_double(x), d, cfg, rout, rlse);
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  expect_close(to_vec(out), rout, tol, tol, "out");
  expect_close(to_vec(lse), rlse, 1e-5, 1e-5, "lse");
}

// Each query head is multi-head attention on its group's K and V: out, lse and dQ are the same
// bits as multi-head attention on K, V repeated per query head, and a group's dK, dV are the sum
// of the repeated heads' (fp32, added in a different order: 1e-5; bf16: the repeated heads'
// are rounded before the sum, the group's once after it: 1e-2).
TEST_P(GroupedQueryAttention, EqualsMultiHeadAttentionOnRepeatedKeysAndValues) {
  const auto [dt, G, p] = GetParam();
  const Dims d{2, 70, 8, 16, G}, mha{2, 70, 8, 16};
  const auto x = rounded(random_vec(size_t(d.n_qkv()), 12, -2, 2), dt);
  const auto g = rounded(random_vec(size_t(d.n_out()), 13), dt);
  Tensor out[2], lse[2], dqkv[2];
  for (int k = 0; k < 2; ++k) {
    const Dims& dk = k == 0 ? d : mha;
    Tensor qkv = from_vec(k == 0 ? x : repeat_kv(x, d), dk.qkv(), dt);
    out[k] = Tensor::empty(dk.out(), dt);
    lse[k] = Tensor::empty(dk.lse(), DType::F32);
    dqkv[k] = Tensor::empty(dk.qkv(), DType::F32);
    attention_forward(qkv, out[k], lse[k], config(dk, p));
    Tensor dq = Tensor::empty(dk.qkv(), dt);
    attention_backward(from_vec(g, dk.out(), dt), qkv, out[k], lse[k], dq, config(dk, p));
    dqkv[k] = from_vec(to_vec(dq), dk.qkv());
  }
  EXPECT_TRUE(bitwise_equal(out[0], out[1]));
  EXPECT_TRUE(bitwise_equal(lse[0], lse[1]));
  const auto got = to_vec(dqkv[0]), rep = to_vec(dqkv[1]);
  const int64_t hpg = d.per_group();
  std::vector<float> dq_got, dq_want, dkv_got, dkv_want;
  for (int64_t bt = 0; bt < d.B * d.T; ++bt)
    for (int64_t grp = 0; grp < d.groups(); ++grp)
      for (int64_t slot = 0; slot < hpg + 2; ++slot)
        for (int64_t c = 0; c < d.D; ++c) {
          const float v = got[size_t(((bt * d.groups() + grp) * (hpg + 2) + slot) * d.D + c)];
          auto rep_at = [&](int64_t h, int64_t which) { return rep[size_t(((bt * d.H + h) * 3 + which) * d.D + c)]; };
          if (slot < hpg) {
            dq_got.push_back(v);
            dq_want.push_back(rep_at(grp * hpg + slot, 0));
          } else {
            float sum = 0.0f;
            for (int64_t h = grp * hpg; h < (grp + 1) * hpg; ++h) sum += rep_at(h, slot - hpg + 1);
            dkv_got.push_back(v);
            dkv_want.push_back(sum);
          }
        }
  EXPECT_EQ(dq_got, dq_want) << "dq";
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  expect_close(dkv_got, dkv_want, tol, tol, "dk, dv");
}

INSTANTIATE_TEST_SUITE_P(
    GroupsDtypesAndDropout, GroupedQueryAttention,
    ::testing::Values(GqaCase{DType::F32, 2, 0.0f}, GqaCase{DType::F32, 1, 0.0f}, GqaCase{DType::BF16, 2, 0.0f},
                      GqaCase{DType::F32, 2, 0.25f}, GqaCase{DType::F32, 1, 0.25f}, GqaCase{DType::BF16, 4, 0.1f}));

struct GqaBackwardCase {
  int64_t G;
  float dropout_p;
};

class GroupedQueryAttentionBackward : public ::testing::TestWithParam<GqaBackwardCase> {};

// dK, dV of a shared head collect the gradient of every query head of its group.
TEST_P(GroupedQueryAttentionBackward, MatchesFiniteDifferences) {
  const auto [G, p] = GetParam();
  backward_matches_finite_differences(Dims{2, 10, 4, 4, G}, p, 14);
}

INSTANTIATE_TEST_SUITE_P(GroupsWithAndWithoutDropout, GroupedQueryAttentionBackward,
                         ::testing::Values(GqaBackwardCase{2, 0.0f}, GqaBackwardCase{1, 0.0f},
                                           GqaBackwardCase{2, 0.3f}, GqaBackwardCase{1, 0.3f}));

TEST(GroupedQueryAttentionBackward, IsBitIdenticalForOneAndTwoThreads) {
  const Dims d{2, 64, 8, 16, 2};
  const AttentionConfig cfg = config(d, 0.1f);
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 16), dout = random_tensor(d.out(), DType::F32, 17);
  Tensor out[2], lse[2], dqkv[2];
  for (int t = 0; t < 2; ++t) {
    out[t] = Tensor::empty(d.out(), DType::F32);
    lse[t] = Tensor::empty(d.lse(), DType::F32);
    dqkv[t] = Tensor::empty(d.qkv(), DType::F32);
    with_threads(t + 1, [&] {
      attention_forward(qkv, out[t], lse[t], cfg);
      attention_backward(dout, qkv, out[t], lse[t], dqkv[t], cfg);
    });
  }
  EXPECT_TRUE(bitwise_equal(out[0], out[1]));
  EXPECT_TRUE(bitwise_equal(lse[0], lse[1]));
  EXPECT_TRUE(bitwise_equal(dqkv[0], dqkv[1]));
}

// A tensor-parallel rank holds whole query groups (heads [h0, h0 + k)), a data-parallel rank some
// samples: run alone with head_offset = h0, total_heads = H (or batch_offset), each must draw the
// full run's dropout mask, so its out, lse and dqkv are the same bits as the full run's slice.
TEST(AttentionDropoutMask, SlicesOfHeadsAndSamplesDrawTheFullRunsMask) {
  struct Slice {
    Dims full;
    int64_t b0, nb, g0, ng;  // samples [b0, b0 + nb), query groups [g0, g0 + ng)
  };
  const Slice slices[] = {
      {{2, 70, 8, 16, 2}, 0, 2, 1, 1},  // GQA: the second group's 4 heads
      {{2, 70, 8, 16, 2}, 1, 1, 0, 2},  // GQA: the second sample
      {{3, 70, 8, 16, 4}, 1, 2, 1, 2},  // both
      {{2, 70, 3, 16}, 1, 1, 1, 2},     // multi-head attention: heads 1, 2 of the second sample
  };
  for (const Slice& sl : slices) {
    const Dims& d = sl.full;
    const int64_t hpg = d.per_group(), h0 = sl.g0 * hpg, nh = sl.ng * hpg;
    const Dims part{sl.nb, d.T, nh, d.D, sl.ng};
    const AttentionConfig cfg = config(d, 0.2f);
    AttentionConfig part_cfg = config(part, 0.2f);
    part_cfg.batch_offset = sl.b0;
    part_cfg.head_offset = int(h0);
    part_cfg.total_heads = int(d.H);
    const auto x = random_vec(size_t(d.n_qkv()), 18), g = random_vec(size_t(d.n_out()), 19);
    const std::vector<std::array<int64_t, 2>> qkv_r{{sl.b0, sl.nb}, {0, d.T}, {sl.g0, sl.ng}, {0, hpg + 2}, {0, d.D}},
        out_r{{sl.b0, sl.nb}, {0, d.T}, {h0, nh}, {0, d.D}}, lse_r{{sl.b0, sl.nb}, {h0, nh}, {0, d.T}};

    Tensor qkv = from_vec(x, d.qkv()), out = Tensor::empty(d.out(), DType::F32);
    Tensor lse = Tensor::empty(d.lse(), DType::F32), dqkv = Tensor::empty(d.qkv(), DType::F32);
    attention_forward(qkv, out, lse, cfg);
    attention_backward(from_vec(g, d.out()), qkv, out, lse, dqkv, cfg);

    Tensor pqkv = from_vec(block(x, d.qkv(), qkv_r), part.qkv()), pout = Tensor::empty(part.out(), DType::F32);
    Tensor plse = Tensor::empty(part.lse(), DType::F32), pdqkv = Tensor::empty(part.qkv(), DType::F32);
    attention_forward(pqkv, pout, plse, part_cfg);
    attention_backward(from_vec(block(g, d.out(), out_r), part.out()), pqkv, pout, plse, pdqkv, part_cfg);

    const std::string what = "samples " + std::to_string(sl.b0) + "+" + std::to_string(sl.nb) + ", heads " +
                             std::to_string(h0) + "+" + std::to_string(nh);
    EXPECT_EQ(to_vec(pout), block(to_vec(out), d.out(), out_r)) << "out, " << what;
    EXPECT_EQ(to_vec(plse), block(to_vec(lse), d.lse(), lse_r)) << "lse, " << what;
    EXPECT_EQ(to_vec(pdqkv), block(to_vec(dqkv), d.qkv(), qkv_r)) << "dqkv, " << what;
    // Without the offsets the slice draws another mask.
    AttentionConfig local = config(part, 0.2f);
    Tensor lout = Tensor::empty(part.out(), DType::F32), llse = Tensor::empty(part.lse(), DType::F32);
    attention_forward(pqkv, lout, llse, local);
    EXPECT_NE(to_vec(lout), to_vec(pout)) << what;
  }
}

// Bad group counts, layouts and mask coordinates are internal errors (MT_CHECK: message, abort).
TEST(AttentionChecks, RejectGroupsThatDoNotDivideHeadsLayoutsOfOtherGroupsAndHeadsOutsideTheMask) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenMP threads exist
  const Dims d{1, 4, 6, 8, 3};
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 1), out = Tensor::empty(d.out(), DType::F32);
  Tensor lse = Tensor::empty(d.lse(), DType::F32);
  AttentionConfig cfg = config(d, 0.0f);
  attention_forward(qkv, out, lse, cfg);
  cfg.n_query_groups = 4;
  EXPECT_DEATH(attention_forward(qkv, out, lse, cfg), "n_query_groups 4 must divide n_heads 6");
  cfg.n_query_groups = 2;  // divides, but qkv holds 3 groups of 2 + 2 heads
  EXPECT_DEATH(attention_forward(qkv, out, lse, cfg), "qkv must have shape");
  cfg.n_query_groups = 3;
  cfg.head_offset = 2;  // heads [2, 8) of 6
  EXPECT_DEATH(attention_forward(qkv, out, lse, cfg), "must lie in total_heads");
  cfg.total_heads = 8;
  attention_forward(qkv, out, lse, cfg);
}

}  // namespace
}  // namespace mt
