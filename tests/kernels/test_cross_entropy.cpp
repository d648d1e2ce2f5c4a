// cross_entropy_forward_backward: losses are -log softmax(logits[:vocab])[target] (double
// reference), the gradient matches finite differences, padding columns get zero, and the
// gradient may overwrite the logits in place.
#include "kernels/cross_entropy.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

Tensor targets_tensor(const std::vector<int32_t>& t) {
  Tensor x = Tensor::empty({int64_t(t.size())}, DType::I32);
  std::copy(t.begin(), t.end(), x.data<int32_t>());
  return x;
}

// -log softmax(x[n, :vocab])[target[n]] in double.
std::vector<double> reference_losses(const std::vector<double>& x, const std::vector<int32_t>& targets, int64_t Vp,
                                     int64_t vocab) {
  std::vector<double> out;
  for (size_t n = 0; n < targets.size(); ++n) {
    double m = -1e300, s = 0;
    for (int64_t v = 0; v < vocab; ++v) m = std::max(m, x[n * Vp + v]);
    for (int64_t v = 0; v < vocab; ++v) s += std::exp(x[n * Vp + v] - m);
    out.push_back(m + std::log(s) - x[n * Vp + targets[n]]);
  }
  return out;
}

TEST(CrossEntropy, LossesMatchNegativeLogSoftmax) {
  const int64_t N = 7, Vp = 64, vocab = 50;
  const std::vector<int32_t> t = {0, 49, 3, 17, 17, 25, 8};
  const auto x = random_vec(size_t(N * Vp), 1, -8, 8);
  for (DType dt : {DType::F32, DType::BF16}) {
    const auto xr = rounded(x, dt);
    Tensor losses = Tensor::empty({N}, DType::F32);
    cross_entropy_forward_backward(from_vec(xr, {N, Vp}, dt), targets_tensor(t), vocab, losses, nullptr, nullptr);
    expect_close(to_vec(losses), reference_losses(to_double(xr), t, Vp, vocab), 1e-5, 1e-5, "losses");
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferencesAndPaddingGetsZero) {
  const int64_t N = 4, Vp = 12, vocab = 9;
  const std::vector<int32_t> t = {8, 0, 4, 4};
  const auto x = random_vec(size_t(N * Vp), 2, -3, 3), dloss = random_vec(size_t(N), 3, 0.1, 1);
  Tensor logits = from_vec(x, {N, Vp}), losses = Tensor::empty({N}, DType::F32), dl = from_vec(dloss, {N});
  Tensor dlogits = from_vec(std::vector<float>(size_t(N * Vp), 7.0f), {N, Vp});  // garbage to overwrite
  cross_entropy_forward_backward(logits, targets_tensor(t), vocab, losses, &dl, &dlogits);

  auto loss = [&](const std::vector<double>& v) {
    const auto l = reference_losses(v, t, Vp, vocab);
    double s = 0;
    for (int64_t n = 0; n < N; ++n) s += dloss[n] * l[n];
    return s;
  };
  std::vector<double> v = to_double(x), fd(v.size());
  for (size_t i = 0; i < v.size(); ++i) fd[i] = central_difference(v, i, 1e-4, loss);  // 0 for padding
  expect_close(to_vec(dlogits), fd, 1e-4, 1e-6, "dlogits");
  const auto g = to_vec(dlogits);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = vocab; c < Vp; ++c) EXPECT_EQ(g[n * Vp + c], 0.0f) << n << ", " << c;
}

TEST(CrossEntropy, GradientMayOverwriteTheLogits) {
  const int64_t N = 5, Vp = 40, vocab = 33;
  const std::vector<int32_t> t = {1, 2, 3, 32, 0};
  Tensor logits = random_tensor({N, Vp}, DType::BF16, 4, -5, 5), dl = random_tensor({N}, DType::F32, 5);
  Tensor losses1 = Tensor::empty({N}, DType::F32), losses2 = Tensor::empty({N}, DType::F32);
  Tensor dlogits = Tensor::empty({N, Vp}, DType::BF16);
  cross_entropy_forward_backward(logits, targets_tensor(t), vocab, losses1, &dl, &dlogits);
  cross_entropy_forward_backward(logits, targets_tensor(t), vocab, losses2, &dl, &logits);
  EXPECT_TRUE(bitwise_equal(losses1, losses2));
  EXPECT_TRUE(bitwise_equal(dlogits, logits));
}

TEST(CrossEntropy, MinusInfinityLogitsAreHarmless) {
  const int64_t Vp = 4;
  Tensor logits = from_vec({-INFINITY, 1.0f, -INFINITY, 2.0f}, {1, Vp}), losses = Tensor::empty({1}, DType::F32);
  cross_entropy_forward_backward(logits, targets_tensor({3}), Vp, losses, nullptr, nullptr);
  EXPECT_NEAR(to_vec(losses)[0], std::log(1 + std::exp(-1.0)), 1e-6);
}

}  // namespace
}  // namespace mt
