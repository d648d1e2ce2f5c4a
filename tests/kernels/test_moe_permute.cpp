// MoE token permutation on the CPU (kernels/moe_permute.h) against plain loops in double over a
// random routing plan with dropped choices (row_map -1) and padding rows (row_source -1), for
// k = 1, 2, 4 in fp32 and bf16; the backwards against central differences of the forwards in
// double; the exact round trip of permute then unpermute; and bit-identical results for any
// thread count.
//
// Tolerances: a sum of n fp32 terms is within n 2^-24 (sum of |term|) of the exact sum, and the
// final rounding to the output dtype adds at most half an ulp: 2^-24 |v| (fp32), 2^-8 |v| (bf16).
// Copies (permute, padding rows) are exact.
#include <cmath>
#include <string>
#include <tuple>

#include "kernels/kernel_testing.h"
#include "kernels/moe_permute.h"
#include "moe_plan.h"

namespace mt {
namespace {

using namespace mt::testing;

double half_ulp(DType dt) { return dt == DType::BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -24); }

// got[i] within the rounding of an fp32 sum of `terms` terms whose magnitudes add to mag[i],
// then one rounding to dt, of the exact want[i].
void expect_sum_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag,
                      int64_t terms, DType dt, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = half_ulp(dt) * std::abs(want[i]) + double(terms) * std::ldexp(mag[i], -24) * 1.01;
    if (!(std::abs(double(got[i]) - want[i]) <= bound) && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i] << " (bound " << bound << ")";
  }
}

// The references, in double over the values the kernels read.
struct Sums {
  std::vector<double> value, mag;  // the exact result and the sum of its terms' magnitudes
};

std::vector<double> permute_ref(const std::vector<float>& x, const MoePlan& p, int64_t C) {
  std::vector<double> out(size_t(p.rows * C), 0.0);
  for (int64_t r = 0; r < p.rows; ++r) {
    const int32_t slot = p.row_source[size_t(r)];
    if (slot < 0) continue;
    for (int64_t c = 0; c < C; ++c) out[size_t(r * C + c)] = x[size_t(slot / p.topk * C + c)];
  }
  return out;
}

// out[t] = sum_s w(t, s) rows[row_map[t k + s]] (w = 1 when probs is empty).
Sums gather_sum_ref(const std::vector<float>& rows, const MoePlan& p, const std::vector<float>& probs, int64_t C) {
  Sums o{std::vector<double>(size_t(p.tokens * C), 0.0), std::vector<double>(size_t(p.tokens * C), 0.0)};
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int s = 0; s < p.topk; ++s) {
      const size_t slot = size_t(t * p.topk + s);
      const int32_t r = p.row_map[slot];
      if (r < 0) continue;
      const double w = probs.empty() ? 1.0 : probs[slot];
      for (int64_t c = 0; c < C; ++c) {
        const double v = w * rows[size_t(r * C + c)];
        o.value[size_t(t * C + c)] += v;
        o.mag[size_t(t * C + c)] += std::abs(v);
      }
    }
  return o;
}

class MoePermute : public ::testing::TestWithParam<std::tuple<DType, int>> {
 protected:
  DType dt() const { return std::get<0>(GetParam()); }
  int topk() const { return std::get<1>(GetParam()); }
  MoePlan plan(uint32_t seed) const { return random_moe_plan(37, topk(), 6, seed); }
};

TEST_P(MoePermute, PermuteCopiesTokenRowsAndZeroesPadding) {
  for (int64_t C : {13, 24}) {
    const MoePlan p = plan(uint32_t(C));
    const Tensor x = random_tensor({p.tokens, C}, dt(), 1);
    Tensor out = Tensor::empty({p.rows, C}, dt());
    moe_permute(x, p.row_source_t, topk(), out);
    expect_close(to_vec(out), permute_ref(to_vec(x), p, C), 0.0, 0.0, "out");
  }
}

TEST_P(MoePermute, PermuteBackwardSumsEachTokensRows) {
  for (int64_t C : {13, 24}) {
    const MoePlan p = plan(uint32_t(C) + 1);
    const Tensor dout = random_tensor({p.rows, C}, dt(), 2);
    Tensor dx = Tensor::empty({p.tokens, C}, dt());
    moe_permute_backward(dout, p.row_map_t, topk(), dx);
    const Sums want = gather_sum_ref(to_vec(dout), p, {}, C);
    expect_sum_close(to_vec(dx), want.value, want.mag, topk(), dt(), "dx");
  }
}

TEST_P(MoePermute, UnpermuteWeightsEachTokensRowsByItsProbs) {
  for (int64_t C : {13, 24}) {
    const MoePlan p = plan(uint32_t(C) + 2);
    const Tensor y = random_tensor({p.rows, C}, dt(), 3);
    const std::vector<float> probs = random_vec(size_t(p.tokens * topk()), 4, 0.0f, 1.0f);
    Tensor out = Tensor::empty({p.tokens, C}, dt());
    moe_unpermute(y, p.row_map_t, from_vec(probs, {p.tokens, topk()}), out);
    const Sums want = gather_sum_ref(to_vec(y), p, probs, C);
    expect_sum_close(to_vec(out), want.value, want.mag, topk(), dt(), "out");
  }
}

TEST_P(MoePermute, UnpermuteBackwardScalesRowsAndDotsDprobs) {
  for (int64_t C : {13, 24}) {
    const MoePlan p = plan(uint32_t(C) + 3);
    const Tensor dout = random_tensor({p.tokens, C}, dt(), 5), y = random_tensor({p.rows, C}, dt(), 6);
    const std::vector<float> probs = random_vec(size_t(p.tokens * topk()), 7, 0.0f, 1.0f);
    Tensor dy = Tensor::empty({p.rows, C}, dt()), dprobs = Tensor::empty({p.tokens, topk()}, DType::F32);
    moe_unpermute_backward(dout, y, p.row_map_t, p.row_source_t, from_vec(probs, {p.tokens, topk()}), dy, dprobs);

    const std::vector<float> d = to_vec(dout), yv = to_vec(y);
    std::vector<double> dy_want(size_t(p.rows * C), 0.0), dy_mag(dy_want.size(), 0.0);
    for (int64_t r = 0; r < p.rows; ++r) {
      const int32_t slot = p.row_source[size_t(r)];
      if (slot < 0) continue;
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = size_t(r * C + c);
        dy_want[i] = double(probs[size_t(slot)]) * d[size_t(slot / topk() * C + c)];
        dy_mag[i] = std::abs(dy_want[i]);
      }
    }
    expect_sum_close(to_vec(dy), dy_want, dy_mag, 1, dt(), "dy");  // an fp32 product, rounded to dt

    std::vector<double> dp_want(probs.size(), 0.0), dp_mag(probs.size(), 0.0);
    for (size_t i = 0; i < probs.size(); ++i) {
      const int32_t r = p.row_map[i];
      if (r < 0) continue;
      for (int64_t c = 0; c < C; ++c) {
        const double v = double(d[size_t(int64_t(i) / topk() * C + c)]) * yv[size_t(r * C + c)];
        dp_want[i] += v;
        dp_mag[i] += std::abs(v);
      }
    }
    expect_sum_close(to_vec(dprobs), dp_want, dp_mag, C, DType::F32, "dprobs");
  }
}

INSTANTIATE_TEST_SUITE_P(DtypesAndTopk, MoePermute,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16), ::testing::Values(1, 2, 4)),
                         [](const auto& info) {  // e.g. bf16_k2
                           return std::string(dtype_name(std::get<0>(info.param))) + "_k" +
                                  std::to_string(std::get<1>(info.param));
                         });

// L(y, probs) = <g, unpermute(y, probs)> and L(x) = <h, permute(x)> in double; their gradients
// are what the backwards compute from dout = g (h). Both are linear in each argument, so central
// differences are exact up to double rounding; the kernels' fp32 results are held to 1e-5.
TEST(MoePermuteGradients, MatchCentralDifferences) {
  for (int k : {1, 2, 4}) {
    const MoePlan p = random_moe_plan(5, k, 4, uint32_t(40 + k));
    const int64_t C = 3, N = p.tokens, R = p.rows;
    const std::vector<float> y = random_vec(size_t(R * C), 8), probs = random_vec(size_t(N * k), 9, 0.0f, 1.0f);
    const std::vector<float> x = random_vec(size_t(N * C), 10), g = random_vec(size_t(N * C), 11);
    const std::vector<float> h = random_vec(size_t(R * C), 12);

    Tensor dy = Tensor::empty({R, C}, DType::F32), dprobs = Tensor::empty({N, k}, DType::F32);
    moe_unpermute_backward(from_vec(g, {N, C}), from_vec(y, {R, C}), p.row_map_t, p.row_source_t,
                           from_vec(probs, {N, k}), dy, dprobs);
    Tensor dx = Tensor::empty({N, C}, DType::F32);
    moe_permute_backward(from_vec(h, {R, C}), p.row_map_t, k, dx);

    // unpermute's L over the packed vector [y | probs].
    std::vector<double> yp = to_double(y);
    yp.insert(yp.end(), probs.begin(), probs.end());
    auto unpermute_loss = [&](const std::vector<double>& v) {
      double l = 0;
      for (int64_t t = 0; t < N; ++t)
        for (int s = 0; s < k; ++s) {
          const int32_t r = p.row_map[size_t(t * k + s)];
          if (r < 0) continue;
          for (int64_t c = 0; c < C; ++c)
            l += g[size_t(t * C + c)] * v[size_t(R * C + t * k + s)] * v[size_t(r * C + c)];
        }
      return l;
    };
    std::vector<double> fd(yp.size());
    for (size_t i = 0; i < yp.size(); ++i) fd[i] = central_difference(yp, i, 1e-3, unpermute_loss);
    expect_close(to_vec(dy), std::vector<double>(fd.begin(), fd.begin() + R * C), 1e-5, 1e-5, "dy");
    expect_close(to_vec(dprobs), std::vector<double>(fd.begin() + R * C, fd.end()), 1e-5, 1e-5, "dprobs");

    std::vector<double> xv = to_double(x);
    auto permute_loss = [&](const std::vector<double>& v) {
      double l = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int32_t slot = p.row_source[size_t(r)];
        if (slot < 0) continue;
        for (int64_t c = 0; c < C; ++c) l += h[size_t(r * C + c)] * v[size_t(slot / k * C + c)];
      }
      return l;
    };
    std::vector<double> fdx(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) fdx[i] = central_difference(xv, i, 1e-3, permute_loss);
    expect_close(to_vec(dx), fdx, 1e-5, 1e-5, "dx");
  }
}

// k = 1 with nothing dropped and probs = 1: unpermute(permute(x)) is x, bit for bit.
TEST(MoePermuteRoundTrip, IsExact) {
  for (DType dt : {DType::F32, DType::BF16}) {
    const MoePlan p = random_moe_plan(29, 1, 5, 13, /*drop=*/0.0);
    const int64_t C = 20;
    const Tensor x = random_tensor({p.tokens, C}, dt, 14);
    Tensor buf = Tensor::empty({p.rows, C}, dt), back = Tensor::empty({p.tokens, C}, dt);
    moe_permute(x, p.row_source_t, 1, buf);
    moe_unpermute(buf, p.row_map_t, from_vec(std::vector<float>(size_t(p.tokens), 1.0f), {p.tokens, 1}), back);
    EXPECT_TRUE(bitwise_equal(back, x)) << dtype_name(dt);
  }
}

// Every output row (and dprobs value) has one writer: 1 and 2 threads give the same bits.
TEST(MoePermuteThreads, DoNotChangeBits) {
  const MoePlan p = random_moe_plan(41, 2, 5, 15);
  const int64_t C = 17, N = p.tokens, R = p.rows;
  const Tensor y = random_tensor({R, C}, DType::BF16, 16), dout = random_tensor({N, C}, DType::BF16, 17);
  const Tensor probs = random_tensor({N, 2}, DType::F32, 18, 0.0f, 1.0f);
  Tensor out[2], dx[2], dy[2], dprobs[2];
  for (int i = 0; i < 2; ++i)
    with_threads(i + 1, [&] {
      out[i] = Tensor::empty({N, C}, DType::BF16);
      dx[i] = Tensor::empty({N, C}, DType::BF16);
      dy[i] = Tensor::empty({R, C}, DType::BF16);
      dprobs[i] = Tensor::empty({N, 2}, DType::F32);
      moe_unpermute(y, p.row_map_t, probs, out[i]);
      moe_permute_backward(y, p.row_map_t, 2, dx[i]);
      moe_unpermute_backward(dout, y, p.row_map_t, p.row_source_t, probs, dy[i], dprobs[i]);
    });
  EXPECT_TRUE(bitwise_equal(out[0], out[1]));
  EXPECT_TRUE(bitwise_equal(dx[0], dx[1]));
  EXPECT_TRUE(bitwise_equal(dy[0], dy[1]));
  EXPECT_TRUE(bitwise_equal(dprobs[0], dprobs[1]));
}

}  // namespace
}  // namespace mt
