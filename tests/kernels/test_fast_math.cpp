// The CPU softmax helpers (kernels/cpu/fast_math.h): exp4 within 2 ulp of exp over the float
// range, exact special values, and exp_shifted_sum / max_of over ragged lengths.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/fast_math.h"

namespace mt::cpu {
namespace {

TEST(FastExp, IsWithinTwoUlpOfExpAcrossTheRange) {
  double worst = 0;
  for (float x = -87.0f; x < 88.7f; x += 3.1e-3f) {
    const double want = std::exp(double(x)), got = exp4(splat(x))[0];
    worst = std::max(worst, std::abs(got - want) / want);
  }
  EXPECT_LT(worst, 2 * 0x1p-24);  // 2 ulp in relative terms (ulp of [1, 2) is 2^-23, half-way rounding)
}

TEST(FastExp, SpecialValues) {
  EXPECT_EQ(exp4(splat(0.0f))[0], 1.0f);
  EXPECT_EQ(exp4(splat(-INFINITY))[0], 0.0f);
  EXPECT_EQ(exp4(splat(-1000.0f))[0], 0.0f);
  EXPECT_EQ(exp4(splat(89.0f))[0], INFINITY);
  EXPECT_TRUE(std::isnan(exp4(splat(NAN))[0]));
  EXPECT_NEAR(exp4(splat(-100.0f))[0], std::exp(-100.0f), 1e-45);  // subnormal result
}

TEST(FastExp, ShiftedSumAndMaxHandleRaggedLengths) {
  for (int n : {1, 3, 4, 7, 64, 65}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) x[size_t(i)] = 0.37f * float(i % 11) - 2.0f;
    const float m = max_of(x.data(), n, -INFINITY);
    float want_max = -INFINITY;
    double want_sum = 0;
    for (float v : x) want_max = std::max(want_max, v);
    for (float v : x) want_sum += std::exp(double(v) - want_max);
    ASSERT_EQ(m, want_max) << n;
    std::vector<float> e = x;
    EXPECT_NEAR(exp_shifted_sum(e.data(), n, m), want_sum, 1e-6 * want_sum) << n;
    for (int i = 0; i < n; ++i) EXPECT_NEAR(e[size_t(i)], std::exp(double(x[size_t(i)]) - m), 1e-7) << n;
  }
}

}  // namespace
}  // namespace mt::cpu
