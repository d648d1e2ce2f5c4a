// Grouped GEMM on the CPU (kernels/grouped_gemm.h) against loops in double, for fp32 and bf16
// operands, with groups that have no rows: forward and dgrad write nothing for them, wgrad sets
// their dw_g to beta dw_g (beta 0 overwrites even NaN, beta 1 keeps the bits).
//
// Tolerance: a dot product of n fp32 terms is within n 2^-24 (sum of |term|) of the exact one,
// whatever the summation order, and the final rounding to the output dtype adds at most half an
// ulp: 2^-24 |v| (fp32), 2^-8 |v| (bf16).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "kernels/grouped_gemm.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

const std::vector<int64_t> kCounts = {3, 0, 5, 1, 0, 4};  // M = 13 rows in 6 groups
constexpr int64_t kN = 6, kK = 7;

int64_t total(const std::vector<int64_t>& counts) {
  int64_t m = 0;
  for (int64_t c : counts) m += c;
  return m;
}

// The exact result of each output and the sum of its terms' magnitudes.
struct Ref {
  std::vector<double> value, mag;
  explicit Ref(size_t n) : value(n, 0.0), mag(n, 0.0) {}
  void add(size_t i, double v) {
    value[i] += v;
    mag[i] += std::abs(v);
  }
};

void expect_within(const std::vector<float>& got, const Ref& want, int64_t terms, DType dt, const char* what) {
  ASSERT_EQ(got.size(), want.value.size()) << what;
  const double half_ulp = dt == DType::BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -24);
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = half_ulp * std::abs(want.value[i]) + double(terms) * std::ldexp(want.mag[i], -24) * 1.01;
    if (!(std::abs(double(got[i]) - want.value[i]) <= bound) && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want.value[i] << " (bound " << bound
                    << ")";
  }
}

class GroupedGemm : public ::testing::TestWithParam<DType> {};

TEST_P(GroupedGemm, ForwardMultipliesEachGroupByItsWeight) {
  const DType dt = GetParam();
  const int64_t G = int64_t(kCounts.size()), M = total(kCounts);
  const Tensor x = random_tensor({M, kK}, dt, 1), w = random_tensor({G, kN, kK}, dt, 2);
  Tensor y = Tensor::empty({M, kN}, dt);
  grouped_gemm_forward(x, w, kCounts, y);
  const std::vector<float> xv = to_vec(x), wv = to_vec(w);
  Ref want(size_t(M * kN));
  for (int64_t g = 0, row0 = 0; g < G; row0 += kCounts[size_t(g)], ++g)
    for (int64_t r = row0; r < row0 + kCounts[size_t(g)]; ++r)
      for (int64_t n = 0; n < kN; ++n)
        for (int64_t k = 0; k < kK; ++k)
          want.add(size_t(r * kN + n), double(xv[size_t(r * kK + k)]) * wv[size_t((g * kN + n) * kK + k)]);
  expect_within(to_vec(y), want, kK, dt, "y");
}

TEST_P(GroupedGemm, DgradMultipliesEachGroupByItsWeight) {
  const DType dt = GetParam();
  const int64_t G = int64_t(kCounts.size()), M = total(kCounts);
  const Tensor dy = random_tensor({M, kN}, dt, 3), w = random_tensor({G, kN, kK}, dt, 4);
  Tensor dx = Tensor::empty({M, kK}, dt);
  grouped_gemm_dgrad(dy, w, kCounts, dx);
  const std::vector<float> dyv = to_vec(dy), wv = to_vec(w);
  Ref want(size_t(M * kK));
  for (int64_t g = 0, row0 = 0; g < G; row0 += kCounts[size_t(g)], ++g)
    for (int64_t r = row0; r < row0 + kCounts[size_t(g)]; ++r)
      for (int64_t k = 0; k < kK; ++k)
        for (int64_t n = 0; n < kN; ++n)
          want.add(size_t(r * kK + k), double(dyv[size_t(r * kN + n)]) * wv[size_t((g * kN + n) * kK + k)]);
  expect_within(to_vec(dx), want, kN, dt, "dx");
}

// dw_g = dy_g^T x_g + beta dw_g for beta 0 (dw starts as NaN), 1 and 0.5; groups without rows
// hold exactly beta dw_g.
TEST_P(GroupedGemm, WgradAccumulatesEachGroupsProductWithBeta) {
  const DType dt = GetParam();
  const int64_t G = int64_t(kCounts.size()), M = total(kCounts);
  const Tensor dy = random_tensor({M, kN}, dt, 5), x = random_tensor({M, kK}, dt, 6);
  const std::vector<float> dyv = to_vec(dy), xv = to_vec(x);
  for (float beta : {0.0f, 1.0f, 0.5f}) {
    const std::vector<float> dw0 =
        beta == 0.0f ? std::vector<float>(size_t(G * kN * kK), std::numeric_limits<float>::quiet_NaN())
                     : random_vec(size_t(G * kN * kK), 7);
    Tensor dw = from_vec(dw0, {G, kN, kK});
    grouped_gemm_wgrad(dy, x, kCounts, dw, beta);
    Ref want(dw0.size());
    for (int64_t g = 0, row0 = 0; g < G; row0 += kCounts[size_t(g)], ++g)
      for (int64_t n = 0; n < kN; ++n)
        for (int64_t k = 0; k < kK; ++k) {
          const size_t i = size_t((g * kN + n) * kK + k);
          if (beta != 0.0f) want.add(i, double(beta) * dw0[i]);
          for (int64_t r = row0; r < row0 + kCounts[size_t(g)]; ++r)
            want.add(i, double(dyv[size_t(r * kN + n)]) * xv[size_t(r * kK + k)]);
        }
    const std::vector<float> got = to_vec(dw);
    expect_within(got, want, 1 + *std::max_element(kCounts.begin(), kCounts.end()), DType::F32, "dw");
    for (int64_t g : {1, 4})  // the empty groups: exactly beta dw_g
      for (int64_t i = g * kN * kK; i < (g + 1) * kN * kK; ++i)
        ASSERT_EQ(got[size_t(i)], float(want.value[size_t(i)])) << "beta " << beta << " group " << g;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GroupedGemm, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// No rows at all: forward and dgrad have nothing to write; wgrad with beta 0 zeroes every group.
TEST(GroupedGemmEmpty, AllGroupsEmpty) {
  const std::vector<int64_t> counts = {0, 0, 0};
  const Tensor none = Tensor::empty({0, kK}, DType::F32), none_n = Tensor::empty({0, kN}, DType::F32);
  const Tensor w = random_tensor({3, kN, kK}, DType::F32, 8);
  grouped_gemm_forward(none, w, counts, none_n);
  grouped_gemm_dgrad(none_n, w, counts, none);
  Tensor dw = from_vec(std::vector<float>(size_t(3 * kN * kK), std::numeric_limits<float>::quiet_NaN()), {3, kN, kK});
  grouped_gemm_wgrad(none_n, none, counts, dw, 0.0f);
  expect_close(to_vec(dw), std::vector<float>(size_t(3 * kN * kK), 0.0f), 0.0, 0.0, "dw");
}

}  // namespace
}  // namespace mt
