// Whole-tensor ops on CUDA against the CPU backend: add (also in place), scale_, sum_squares
// (fp64 result, bit-reproducible), all_finite, cast between every pair of float dtypes,
// fill_normal (the same Philox draws, with an index offset) and fill; lengths that take the
// vectorised and the scalar paths, and a misaligned view.
#include "kernels/elementwise.h"

#include <algorithm>
#include <limits>

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

const int64_t kLengths[] = {1, 1003, 1 << 16};

class CudaElementwise : public ::testing::TestWithParam<DType> {};

TEST_P(CudaElementwise, AddAndScaleMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  for (int64_t n : kLengths) {
    Tensor a = random_tensor({n}, dt, 1), b = random_tensor({n}, dt, 2), out = Tensor::empty({n}, dt);
    add(a, b, out);
    Tensor ag = to_gpu(a), bg = to_gpu(b), outg = poisoned({n}, dt);
    add(ag, bg, outg);
    EXPECT_LT(rel_err(outg, out), tol_for(dt, 1e-6)) << n;
    add(ag, bg, ag);  // in place
    EXPECT_TRUE(same_bits(ag, outg));
    scale_(out, -0.37f);
    scale_(outg, -0.37f);
    EXPECT_LT(rel_err(outg, out), tol_for(dt, 1e-6)) << n;
  }
}

TEST_P(CudaElementwise, MisalignedViewsTakeTheScalarPath) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  const int64_t n = 4099;
  Tensor a = random_tensor({n + 1}, dt, 3), b = random_tensor({n + 1}, dt, 4);
  Tensor ag = to_gpu(a), bg = to_gpu(b), out = Tensor::empty({n}, dt), outg = poisoned({n + 1}, dt);
  add(a.flat_slice(1, n, {n}), b.flat_slice(1, n, {n}), out);
  add(ag.flat_slice(1, n, {n}), bg.flat_slice(1, n, {n}), outg.flat_slice(1, n, {n}));
  EXPECT_LT(rel_err(outg.flat_slice(1, n, {n}), out), tol_for(dt, 1e-6));
}

TEST_P(CudaElementwise, SumSquaresMatchesCpuAndIsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  for (int64_t n : {int64_t(1), int64_t(1003), int64_t(3 << 20)}) {
    Tensor x = random_tensor({n}, dt, 5, -3, 3), xg = to_gpu(x);
    const double want = sum_squares(x), got = sum_squares(xg);
    EXPECT_NEAR(got, want, 1e-5 * want) << n;
    EXPECT_EQ(got, sum_squares(xg));
  }
}

TEST_P(CudaElementwise, AllFiniteFindsInfAndNan) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  const auto vals = random_vec(100000, 6);
  EXPECT_TRUE(all_finite(to_gpu(from_vec(vals, {100000}, dt))));
  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    auto v = vals;
    v[77777] = bad;
    EXPECT_FALSE(all_finite(to_gpu(from_vec(v, {100000}, dt))));
  }
}

TEST_P(CudaElementwise, CountZerosMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  for (int64_t n : kLengths) {
    Tensor f = random_tensor({n}, DType::F32, 3);
    for (int64_t i = 0; i < n; i += 5) f.data<float>()[i] = i % 2 ? -0.0f : 0.0f;  // both signs of zero
    Tensor x = Tensor::empty({n}, dt);
    cast(f, x);
    const int64_t cpu = count_zeros(x);
    EXPECT_EQ(cpu, (n + 4) / 5) << n;
    EXPECT_EQ(count_zeros(to_gpu(x)), cpu) << n;
  }
}

TEST_P(CudaElementwise, CastToEveryDtypeMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType src = GetParam();
  Tensor x = random_tensor({5001}, src, 7, -100, 100), xg = to_gpu(x);
  for (DType dst : {DType::F32, DType::BF16, DType::F16}) {
    Tensor y = Tensor::empty({5001}, dst), yg = poisoned({5001}, dst);
    cast(x, y);
    cast(xg, yg);
    EXPECT_TRUE(same_bits(yg, y)) << name_of(src) << " -> " << name_of(dst);  // one correctly rounded step
  }
}

TEST_P(CudaElementwise, FillNormalAndFillMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const DType dt = GetParam();
  for (int64_t n : kLengths) {
    Tensor t = Tensor::empty({n}, dt), tg = poisoned({n}, dt);
    fill_normal(t, 0.02f, 11, 12, 1000);
    fill_normal(tg, 0.02f, 11, 12, 1000);
    EXPECT_LT(rel_err(tg, t), tol_for(dt, 1e-6)) << n;
    fill(t, 1.5f);
    fill(tg, 1.5f);
    EXPECT_TRUE(same_bits(tg, t));
  }
}

// One launch zeroes many ranges of an fp32 buffer, long (grid-striding) and short, and leaves
// the rest untouched: the CPU result, bit for bit.
TEST(CudaZeroRanges, MatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 1 << 20;
  Tensor t = Tensor::empty({n}, DType::F32);
  fill_normal(t, 1.0f, 3, 4);
  Tensor r = Tensor::empty({4, 2}, DType::I64);
  const int64_t spec[] = {0, 1, 7, 300000, 400001, 3, n - 5000, 5000};
  std::copy(spec, spec + 8, r.data<int64_t>());
  Tensor tg = to_gpu(t);
  zero_ranges(t, r);
  zero_ranges(tg, to_gpu(r));
  EXPECT_TRUE(same_bits(tg, t));
}

// The pitched copy of context parallelism's all-to-all: the CPU result, bit for bit (bf16 rows with
// odd widths and pitches, so rows start unaligned).
TEST(CudaCopy2d, MatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Tensor src = random_tensor({5000}, DType::BF16, 7), dst = random_tensor({7000}, DType::BF16, 8);
  Tensor sg = to_gpu(src), dg = to_gpu(dst);
  copy_2d(src, 3, 97, dst, 5, 131, 61, 50);
  copy_2d(sg, 3, 97, dg, 5, 131, 61, 50);
  EXPECT_TRUE(same_bits(dg, dst));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaElementwise, ::testing::Values(DType::F32, DType::BF16, DType::F16));

}  // namespace
}  // namespace mt
