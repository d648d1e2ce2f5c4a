// RoPE on the fused qkv [B, T, G, Q/G + 2, D]: the CPU reference against the rotate_half formula
// in double, for full and partial rotation (rot_dim < D) and grouped queries (G < Q); value
// heads and the unrotated tail stay bit for bit; backward undoes forward and is its transpose
// (<rope(x), g> = <x, rope_backward(g)>, and matches finite differences of a linear loss).
#include <cmath>
#include <cstring>

#include "kernels/kernel_testing.h"
#include "kernels/rope.h"

namespace mt {
namespace {

using namespace mt::testing;

struct RopeCase {
  int64_t B, T, G, q_per_group, D;
  int rot_dim;
  int64_t table_rows;  // T' >= T
};

// Tables of a Llama-style rope: angle t * base^(-2i/R), with base 10000.
struct Tables {
  std::vector<double> cos, sin;
  Tensor cos_t, sin_t;
};
Tables make_tables(int64_t rows, int rot_dim) {
  Tables tb;
  const int64_t half = rot_dim / 2;
  std::vector<float> c(size_t(rows * half)), s(size_t(rows * half));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(t) * std::pow(10000.0, -2.0 * double(i) / rot_dim);
      c[size_t(t * half + i)] = float(std::cos(angle));
      s[size_t(t * half + i)] = float(std::sin(angle));
    }
  tb.cos.assign(c.begin(), c.end());
  tb.sin.assign(s.begin(), s.end());
  tb.cos_t = from_vec(c, {rows, half});
  tb.sin_t = from_vec(s, {rows, half});
  return tb;
}

Shape qkv_shape(const RopeCase& c) { return {c.B, c.T, c.G, c.q_per_group + 2, c.D}; }

// The formula in double, on the fp32 tables; sign -1 is the inverse rotation.
std::vector<double> rope_ref(const std::vector<float>& x, const RopeCase& c, const Tables& tb, double sign = 1) {
  std::vector<double> y(x.begin(), x.end());
  const int64_t S = c.q_per_group + 2, half = c.rot_dim / 2;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t g = 0; g < c.G; ++g)
        for (int64_t slot = 0; slot < S - 1; ++slot) {  // queries, then the key; not the value
          const int64_t base = (((b * c.T + t) * c.G + g) * S + slot) * c.D;
          for (int64_t i = 0; i < half; ++i) {
            const double x1 = x[size_t(base + i)], x2 = x[size_t(base + i + half)];
            const double co = tb.cos[size_t(t * half + i)], si = sign * tb.sin[size_t(t * half + i)];
            y[size_t(base + i)] = x1 * co - x2 * si;
            y[size_t(base + i + half)] = x2 * co + x1 * si;
          }
        }
  return y;
}

const RopeCase kCases[] = {
    {2, 5, 1, 1, 8, 8, 5},     // multi-head attention, one group, full rotation
    {1, 7, 2, 3, 16, 16, 9},   // grouped: 6 query heads in 2 groups, T' > T
    {2, 3, 3, 2, 12, 6, 3},    // partial rotation: rot_dim = D / 2
    {1, 4, 2, 1, 10, 2, 4},    // the smallest rotation, odd pair count elsewhere
    {1, 3, 1, 4, 6, 4, 11},    // rot_dim < D with D not a multiple of rot_dim
};

class RopeForward : public ::testing::TestWithParam<DType> {};

TEST_P(RopeForward, MatchesRotateHalfInDouble) {
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-6 : dt == DType::BF16 ? 1e-2 : 2e-3;
  for (const RopeCase& c : kCases) {
    const Tables tb = make_tables(c.table_rows, c.rot_dim);
    Tensor qkv = random_tensor(qkv_shape(c), dt, 1);
    const auto x = to_vec(qkv);  // the values the kernel reads
    rope_forward(qkv, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    expect_close(to_vec(qkv), rope_ref(x, c, tb), tol, tol, "rope");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RopeForward, ::testing::Values(DType::F32, DType::BF16, DType::F16));

// Value heads and channels at or past rot_dim are never written.
TEST(Rope, LeavesValueHeadsAndTheTailBitForBit) {
  const RopeCase c{2, 4, 2, 2, 12, 8, 4};
  const Tables tb = make_tables(c.table_rows, c.rot_dim);
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor qkv = random_tensor(qkv_shape(c), dt, 2);
    Tensor before = qkv.to(Device::cpu());
    rope_forward(qkv, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    const int64_t S = c.q_per_group + 2, es = int64_t(dtype_size(dt));
    const auto* got = static_cast<const uint8_t*>(qkv.raw());
    const auto* was = static_cast<const uint8_t*>(before.raw());
    int64_t changed_rotated = 0;
    for (int64_t head = 0; head < qkv.numel() / c.D; ++head)
      for (int64_t i = 0; i < c.D; ++i) {
        const int64_t e = head * c.D + i;
        const bool same = std::memcmp(got + e * es, was + e * es, size_t(es)) == 0;
        if (head % S == S - 1 || i >= c.rot_dim)
          ASSERT_TRUE(same) << "head " << head << " channel " << i;
        else
          changed_rotated += !same;
      }
    EXPECT_GT(changed_rotated, 0);
  }
}

TEST(Rope, BackwardUndoesForward) {
  for (const RopeCase& c : kCases) {
    const Tables tb = make_tables(c.table_rows, c.rot_dim);
    Tensor qkv = random_tensor(qkv_shape(c), DType::F32, 3);
    const auto x = to_vec(qkv);
    rope_forward(qkv, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    rope_backward(qkv, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    expect_close(to_vec(qkv), x, 0, 1e-6, "backward(forward(x))");
  }
}

TEST(Rope, BackwardMatchesTheInverseFormula) {
  for (const RopeCase& c : kCases) {
    const Tables tb = make_tables(c.table_rows, c.rot_dim);
    Tensor dqkv = random_tensor(qkv_shape(c), DType::F32, 4);
    const auto g = to_vec(dqkv);
    rope_backward(dqkv, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    expect_close(to_vec(dqkv), rope_ref(g, c, tb, -1), 1e-6, 1e-6, "rope_backward");
  }
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// Backward is the transpose of forward: <rope(x), g> = <x, rope_backward(g)>.
TEST(Rope, BackwardIsTheTranspose) {
  for (const RopeCase& c : kCases) {
    const Tables tb = make_tables(c.table_rows, c.rot_dim);
    Tensor x = random_tensor(qkv_shape(c), DType::F32, 5), g = random_tensor(qkv_shape(c), DType::F32, 6);
    const auto vx = to_vec(x), vg = to_vec(g);
    rope_forward(x, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    rope_backward(g, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    const double lhs = dot(to_vec(x), vg), rhs = dot(vx, to_vec(g));
    EXPECT_NEAR(lhs, rhs, 1e-5 * (1 + std::abs(lhs)));
  }
}

// d/dx of the loss <rope(x), g> by central differences equals rope_backward(g) (the loss is
// linear, so a large step only shrinks the fp32 rounding in the quotient).
TEST(Rope, BackwardMatchesFiniteDifferences) {
  const RopeCase c{1, 3, 2, 2, 6, 4, 3};
  const Tables tb = make_tables(c.table_rows, c.rot_dim);
  const size_t n = size_t(shape_numel(qkv_shape(c)));
  const auto x = random_vec(n, 7), g = random_vec(n, 8);
  Tensor dx = from_vec(g, qkv_shape(c));
  rope_backward(dx, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
  std::vector<double> vx = to_double(x), fd(n);
  auto loss = [&](const std::vector<double>& v) {
    Tensor t = Tensor::empty(qkv_shape(c), DType::F32);
    for (size_t i = 0; i < n; ++i) t.data<float>()[i] = float(v[i]);
    rope_forward(t, tb.cos_t, tb.sin_t, int(c.G), c.rot_dim);
    return dot(to_vec(t), g);
  };
  for (size_t i = 0; i < n; ++i) fd[i] = central_difference(vx, i, 0.1, loss);
  expect_close(to_vec(dx), fd, 1e-3, 1e-4, "dx");
}

TEST(RopeDeathTest, RejectsBadArguments) {
  const Tables tb = make_tables(4, 8);
  Tensor qkv = random_tensor({1, 4, 2, 3, 8}, DType::F32, 9);
  EXPECT_DEATH(rope_forward(qkv, tb.cos_t, tb.sin_t, 1, 8), "n_query_groups = 1");
  EXPECT_DEATH(rope_forward(qkv, tb.cos_t, tb.sin_t, 2, 6), "rot_dim / 2 = 3");
  const Tables odd = make_tables(4, 6);
  EXPECT_DEATH(rope_forward(qkv, odd.cos_t, odd.sin_t, 2, 7), "rot_dim = 7 must be even");
  const Tables wide = make_tables(4, 10);
  EXPECT_DEATH(rope_forward(qkv, wide.cos_t, wide.sin_t, 2, 10), "rot_dim = 10 must be even and in");
  const Tables short_t = make_tables(3, 8);
  EXPECT_DEATH(rope_backward(qkv, short_t.cos_t, short_t.sin_t, 2, 8), "T' >= T = 4");
  Tensor four_d = random_tensor({4, 2, 3, 8}, DType::F32, 10);
  EXPECT_DEATH(rope_forward(four_d, tb.cos_t, tb.sin_t, 2, 8), "must be \\[B, T, G");
}

}  // namespace
}  // namespace mt
