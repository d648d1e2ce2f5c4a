// adamw_step: PyTorch AdamW arithmetic (decoupled weight decay, bias correction), checked
// against a two-step update worked by hand and against the formula in double; the half
// parameter copy is the rounded master.
#include "kernels/adamw_per_slice.h"
#include "kernels/kernel_testing.h"
#include "kernels/optimizer.h"

namespace mt {
namespace {

using namespace mt::testing;

TEST(AdamW, TwoStepsMatchAHandComputedUpdate) {
  // lr 0.1, wd 0.01, betas (0.9, 0.999), eps 1e-8; grads 0.5, then -0.25 with grad_scale 2.
  //  step 1: m = 0.05, v = 0.00025, master = 1 * 0.999 - 0.1 * (0.05/0.1) / (sqrt(0.00025/0.001) + 1e-8)
  //          = 0.999 - 0.099999998 = 0.899000002
  //  step 2: g = -0.5, m = 0.045 - 0.05 = -0.005, v = 0.00024975 + 0.00025 = 0.00049975,
  //          master = 0.899000002 * 0.999 - 0.1 * (-0.005/0.19) / (sqrt(0.00049975/0.001999) + 1e-8)
  //          = 0.898101002 + 0.005263158 = 0.903364160
  Tensor master = from_vec({1.0f}, {1}), grad = from_vec({0.5f}, {1});
  Tensor m = Tensor::zeros({1}, DType::F32), v = Tensor::zeros({1}, DType::F32);
  AdamWParams p;
  p.lr = 0.1f;
  p.weight_decay = 0.01f;
  p.step = 1;
  adamw_step(master, grad, m, v, nullptr, p);
  // m and v carry the fp32 betas: 1 - 0.999f = 0.00099998713, so v is 1.3e-5 relative off the
  // decimal value; the bias correction divides the same factor out again, so master is not.
  EXPECT_NEAR(to_vec(m)[0], 0.05, 0.05 * 1e-6);
  EXPECT_NEAR(to_vec(v)[0], 0.00025, 0.00025 * 2e-5);
  EXPECT_NEAR(to_vec(master)[0], 0.899000002, 1e-7);
  grad.data<float>()[0] = -0.25f;
  p.step = 2;
  p.grad_scale = 2.0f;
  adamw_step(master, grad, m, v, nullptr, p);
  EXPECT_NEAR(to_vec(m)[0], -0.005, 0.005 * 1e-5);
  EXPECT_NEAR(to_vec(v)[0], 0.00049975, 0.00049975 * 2e-5);
  EXPECT_NEAR(to_vec(master)[0], 0.903364160, 1e-7);
}

TEST(AdamW, MatchesTheFormulaInDoubleAndWritesTheRoundedHalfCopy) {
  const int64_t n = 10000;
  const auto w0 = random_vec(size_t(n), 1), g1 = random_vec(size_t(n), 2, -3, 3), g2 = random_vec(size_t(n), 3, -3, 3);
  Tensor master = from_vec(w0, {n}), m = Tensor::zeros({n}, DType::F32), v = Tensor::zeros({n}, DType::F32);
  Tensor param = Tensor::empty({n}, DType::BF16);
  AdamWParams p{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0.5f};
  std::vector<double> w = to_double(w0), dm(size_t(n), 0.0), dv(size_t(n), 0.0);
  for (int step = 1; step <= 2; ++step) {
    p.step = step;
    const auto& g = step == 1 ? g1 : g2;
    adamw_step(master, from_vec(g, {n}), m, v, &param, p);
    for (int64_t i = 0; i < n; ++i) {
      const double gi = double(g[i]) * p.grad_scale;
      dm[i] = p.beta1 * dm[i] + (1 - double(p.beta1)) * gi;
      dv[i] = p.beta2 * dv[i] + (1 - double(p.beta2)) * gi * gi;
      w[i] *= 1 - double(p.lr) * p.weight_decay;
      w[i] -= double(p.lr) / (1 - std::pow(double(p.beta1), step)) * dm[i] /
              (std::sqrt(dv[i] / (1 - std::pow(double(p.beta2), step))) + p.eps);
    }
  }
  expect_close(to_vec(master), w, 1e-6, 1e-6, "master");
  expect_close(to_vec(m), dm, 1e-5, 1e-7, "m");
  expect_close(to_vec(v), dv, 1e-5, 1e-7, "v");
  const auto mf = to_vec(master), pb = to_vec(param);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(pb[i], to_f32(to_bf16(mf[i]))) << i;
}

// adamw_step_ranges: each range updated exactly as adamw_step on its slices (master, state and
// param offsets differ, weight decay only where asked), elements outside every range untouched.
TEST(AdamW, RangesUpdateLikeOneStepPerSliceAndLeaveTheRestAlone) {
  const int64_t n = 300, ns = 260;  // param space; master and state space (distributed-optimizer style)
  const std::vector<AdamWRange> ranges{{0, 10, 20, 50, true}, {60, 70, 80, 33, false}, {100, 0, 0, 7, true},
                                       {200, 150, 150, 90, false}, {299, 259, 259, 1, true}};
  AdamWParams p{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0.5f};
  Tensor grad = random_tensor({n}, DType::F32, 1, -3, 3);
  Tensor master = random_tensor({ns}, DType::F32, 2), m = random_tensor({ns}, DType::F32, 3, 0, 1);
  Tensor v = random_tensor({ns}, DType::F32, 4, 0, 1), param = random_tensor({n}, DType::BF16, 5);
  Tensor master2 = master.to(Device::cpu()), m2 = m.to(Device::cpu()), v2 = v.to(Device::cpu());
  Tensor param2 = param.to(Device::cpu());
  for (int step = 1; step <= 2; ++step) {
    p.step = step;
    adamw_step_ranges(master, grad, m, v, &param, ranges, p);
    adamw_step_per_slice(master2, grad, m2, v2, param2, ranges, p);
  }
  EXPECT_TRUE(bitwise_equal(master, master2));
  EXPECT_TRUE(bitwise_equal(m, m2));
  EXPECT_TRUE(bitwise_equal(v, v2));
  EXPECT_TRUE(bitwise_equal(param, param2));
  EXPECT_EQ(to_vec(master)[8], to_vec(random_tensor({ns}, DType::F32, 2))[8]);  // in no range: untouched
  EXPECT_EQ(to_vec(param)[55], to_vec(random_tensor({n}, DType::BF16, 5))[55]);
}

TEST(AdamW, ARangeOutsideTheBuffersIsRejected) {
  Tensor t = Tensor::zeros({8}, DType::F32);
  AdamWParams p;
  EXPECT_DEATH(adamw_step_ranges(t, t, t, t, nullptr, {{4, 0, 0, 5, true}}, p), "adamw_step_ranges: range");
}

}  // namespace
}  // namespace mt
