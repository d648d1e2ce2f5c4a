// elementwise ops: add, scale_, cast, fill, fill_normal (Philox, index offsets), and the
// deterministic reductions sum_squares and all_finite.
#include <algorithm>

#include "core/rng.h"
#include "kernels/elementwise.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

TEST(Add, SumsInFp32AndMayWorkInPlace) {
  const auto a = rounded(random_vec(1000, 1), DType::BF16), b = rounded(random_vec(1000, 2), DType::BF16);
  Tensor ta = from_vec(a, {1000}, DType::BF16), tb = from_vec(b, {1000}, DType::BF16),
         out = Tensor::empty({1000}, DType::BF16);
  add(ta, tb, out);
  std::vector<float> want(1000);
  for (size_t i = 0; i < want.size(); ++i) want[i] = to_f32(to_bf16(a[i] + b[i]));
  expect_close(to_vec(out), want, 0, 0, "out");
  add(ta, tb, ta);
  EXPECT_TRUE(bitwise_equal(ta, out));
}

TEST(Scale, MultipliesEveryElement) {
  const auto x = random_vec(333, 3);
  Tensor t = from_vec(x, {333});
  scale_(t, -0.5f);
  std::vector<float> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] * -0.5f;
  expect_close(to_vec(t), want, 0, 0, "x");
}

TEST(SumSquares, MatchesDoubleAndIsBitIdenticalForOneAndTwoThreads) {
  const int64_t n = 100003;  // many 4096-element chunks and a ragged tail
  const auto x = random_vec(size_t(n), 4);
  Tensor t = from_vec(x, {n});
  double want = 0;
  for (float v : x) want += double(v) * v;
  double got[2];
  for (int k = 0; k < 2; ++k) with_threads(k + 1, [&] { got[k] = sum_squares(t); });
  EXPECT_NEAR(got[0], want, 1e-5 * want);
  EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0) << got[0] << " vs " << got[1];
  EXPECT_NEAR(sum_squares(from_vec(x, {n}, DType::F16)), want, 1e-3 * want);
}

TEST(AllFinite, DetectsInfAndNan) {
  Tensor t = random_tensor({10000}, DType::F32, 5);
  EXPECT_TRUE(all_finite(t));
  t.data<float>()[9999] = INFINITY;
  EXPECT_FALSE(all_finite(t));
  t.data<float>()[9999] = 0;
  t.data<float>()[17] = NAN;
  EXPECT_FALSE(all_finite(t));
  Tensor h = Tensor::empty({2}, DType::F16);
  h.data<f16>()[0] = f16{0x3c00};  // 1.0
  h.data<f16>()[1] = f16{0x7c00};  // +inf
  EXPECT_FALSE(all_finite(h));
}

TEST(Cast, ConvertsBetweenFloatDtypesWithRounding) {
  const auto x = random_vec(500, 6, -100, 100);
  Tensor f32 = from_vec(x, {500}), b = Tensor::empty({500}, DType::BF16), h = Tensor::empty({500}, DType::F16),
         back = Tensor::empty({500}, DType::F32);
  cast(f32, b);
  cast(b, h);
  cast(h, back);
  std::vector<float> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = to_f32(to_f16(to_f32(to_bf16(x[i]))));
  expect_close(to_vec(back), want, 0, 0, "fp32 <- fp16 <- bf16 <- fp32");
}

TEST(Fill, SetsEveryElement) {
  Tensor t = Tensor::empty({77}, DType::BF16);
  fill(t, 2.5f);
  expect_close(to_vec(t), std::vector<float>(77, 2.5f), 0, 0, "t");
}

TEST(ZeroRanges, ZeroesExactlyTheRanges) {
  Tensor t = Tensor::empty({20}, DType::F32);
  fill(t, 3.0f);
  Tensor r = Tensor::empty({3, 2}, DType::I64);
  const int64_t spec[] = {0, 2, 5, 0, 9, 11};  // [0, 2), nothing, [9, 20)
  std::copy(spec, spec + 6, r.data<int64_t>());
  zero_ranges(t, r);
  std::vector<float> want(20, 0.0f);
  for (int i = 2; i < 9; ++i) want[size_t(i)] = 3.0f;
  expect_close(to_vec(t), want, 0, 0, "t");
  r.data<int64_t>()[5] = 12;  // [9, 21): past the end
  EXPECT_DEATH(zero_ranges(t, r), "range \\[9, 21\\) outside 20 elements");
}

// Rows of `width` elements move between pitched layouts; what is outside the rows stays; a row past
// the end is refused.
TEST(Copy2d, MovesPitchedRowsAndLeavesTheRest) {
  Tensor src = Tensor::empty({24}, DType::I32), dst = Tensor::empty({30}, DType::I32);
  for (int i = 0; i < 24; ++i) src.data<int32_t>()[i] = i;
  for (int i = 0; i < 30; ++i) dst.data<int32_t>()[i] = -1;
  copy_2d(src, 1, 6, dst, 2, 10, 3, 3);  // rows [1, 4), [7, 10), [13, 16) -> [2, 5), [12, 15), [22, 25)
  std::vector<int32_t> want(30, -1);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) want[size_t(2 + 10 * r + c)] = 1 + 6 * r + c;
  EXPECT_EQ(std::vector<int32_t>(dst.data<int32_t>(), dst.data<int32_t>() + 30), want);
  EXPECT_DEATH(copy_2d(src, 1, 8, dst, 0, 3, 3, 4), "rows outside src");  // src row 3 ends at 28 > 24
  EXPECT_DEATH(copy_2d(src, 1, 6, dst, 2, 10, 3, 4), "rows outside dst");  // dst row 3 ends at 35 > 30
}

TEST(FillNormal, IsPhiloxNormalScaledAndOffsetsSelectTheSameDraws) {
  const int64_t n = 20000;
  const uint64_t seed = 7, stream = rng_stream("init/test");
  Tensor whole = Tensor::empty({n}, DType::F32);
  fill_normal(whole, 0.02f, seed, stream);
  const auto w = to_vec(whole);
  for (int64_t i : {int64_t(0), int64_t(1), n - 1}) EXPECT_EQ(w[i], 0.02f * philox_normal(seed, stream, uint64_t(i)));
  // A shard filled with index_offset draws the same numbers as the corresponding slice.
  Tensor shard = Tensor::empty({1000}, DType::F32);
  fill_normal(shard, 0.02f, seed, stream, 5000);
  expect_close(to_vec(shard), std::vector<float>(w.begin() + 5000, w.begin() + 6000), 0, 0, "shard");
  double mean = 0, sq = 0;
  for (float x : w) mean += x, sq += double(x) * x;
  mean /= double(n);
  EXPECT_NEAR(mean, 0.0, 0.02 * 0.03);
  EXPECT_NEAR(std::sqrt(sq / double(n) - mean * mean), 0.02, 0.02 * 0.03);
}

}  // namespace
}  // namespace mt
