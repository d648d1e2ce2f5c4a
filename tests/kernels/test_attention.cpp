// Causal attention against an explicit double-precision softmax(Q K^T * scale + causal mask) V
// (with the same Philox dropout mask), backward against central finite differences of
// L = sum(out * G) taken on that reference, and thread-count determinism.
#include "core/rng.h"
#include "kernels/attention.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

struct Dims {
  int64_t B, T, H, D;
  Shape qkv() const { return {B, T, H, 3, D}; }
  Shape out() const { return {B, T, H, D}; }
  Shape lse() const { return {B, H, T}; }
  int64_t n_qkv() const { return B * T * H * 3 * D; }
  int64_t n_out() const { return B * T * H * D; }
};

AttentionConfig config(const Dims& d, float p) {
  return {int(d.H), int(d.D), p, /*seed=*/42, /*stream=*/rng_stream("test/attention")};
}

// out [B, T, H, D] and lse [B, H, T] of causal attention over qkv [B, T, H, 3, D], in double.
void reference(const std::vector<double>& qkv, const Dims& d, const AttentionConfig& cfg, std::vector<double>& out,
               std::vector<double>& lse) {
  out.assign(size_t(d.n_out()), 0);
  lse.assign(size_t(d.B * d.H * d.T), 0);
  const double scale = 1 / std::sqrt(double(d.D));
  auto at = [&](int64_t b, int64_t t, int64_t h, int64_t which, int64_t c) {
    return qkv[size_t((((b * d.T + t) * d.H + h) * 3 + which) * d.D + c)];
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
          const uint64_t idx = uint64_t(((b * d.H + h) * d.T + i) * d.T + j);
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

TEST_P(AttentionBackward, MatchesFiniteDifferences) {
  const float p = GetParam();
  const Dims d{2, 10, 2, 4};
  const AttentionConfig cfg = config(d, p);
  const auto x = random_vec(size_t(d.n_qkv()), 2, -1.5, 1.5), g = random_vec(size_t(d.n_out()), 3);
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

}  // namespace
}  // namespace mt
