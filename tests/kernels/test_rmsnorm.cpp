// rmsnorm on the CPU: forward against a double-precision reference; backward against central
// finite differences of L = sum(y * G) taken on that reference (fp32) and against the analytic
// gradient in double (bf16); thread-count determinism; the fused residual variants are, bit for
// bit, the unfused sequences rmsnorm.h defines them by; qk_rmsnorm is rmsnorm applied to each q
// and k head alone (bit for bit, forward and backward) with the value heads copied, and matches
// finite differences.
#include "kernels/elementwise.h"
#include "kernels/kernel_testing.h"
#include "kernels/rmsnorm.h"

namespace mt {
namespace {

using namespace mt::testing;

constexpr double kEps = 1e-5;

// y and rstd of the rows of x [N, C] in double.
void reference(const std::vector<double>& x, const std::vector<double>& w, int64_t N, int64_t C,
               std::vector<double>& y, std::vector<double>& rstd) {
  y.assign(size_t(N * C), 0);
  rstd.assign(size_t(N), 0);
  for (int64_t r = 0; r < N; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += x[r * C + c] * x[r * C + c];
    const double rs = 1 / std::sqrt(ss / double(C) + kEps);
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = x[r * C + c] * rs * w[c];
    rstd[r] = rs;
  }
}

// The analytic backward in double: dx, and dw (sum over rows, no accumulator).
void reference_backward(const std::vector<double>& dy, const std::vector<double>& x, const std::vector<double>& w,
                        int64_t N, int64_t C, std::vector<double>& dx, std::vector<double>& dw) {
  std::vector<double> y, rstd;
  reference(x, w, N, C, y, rstd);
  dx.assign(size_t(N * C), 0);
  dw.assign(size_t(C), 0);
  for (int64_t r = 0; r < N; ++r) {
    double m = 0;
    for (int64_t c = 0; c < C; ++c) m += dy[r * C + c] * w[c] * x[r * C + c] * rstd[r];
    m /= double(C);
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = x[r * C + c] * rstd[r];
      dx[r * C + c] = rstd[r] * (dy[r * C + c] * w[c] - xhat * m);
      dw[c] += dy[r * C + c] * xhat;
    }
  }
}

class RmsNormForward : public ::testing::TestWithParam<DType> {};

TEST_P(RmsNormForward, MatchesDoublePrecisionReference) {
  const DType dt = GetParam();
  const int64_t N = 6, C = 37;
  const auto x = rounded(random_vec(size_t(N * C), 1, -2, 3), dt);
  for (DType wt : {dt, DType::F32}) {
    const auto w = rounded(random_vec(size_t(C), 2, 0.5, 1.5), wt);
    Tensor y = Tensor::empty({N, C}, dt), rstd = Tensor::empty({N}, DType::F32);
    rmsnorm_forward(from_vec(x, {N, C}, dt), from_vec(w, {C}, wt), float(kEps), y, rstd);
    std::vector<double> ry, rrstd;
    reference(to_double(x), to_double(w), N, C, ry, rrstd);
    // fp32 to ~1e-5 relative; half dtypes are dominated by the output rounding (2^-8 for bf16).
    const double tol = dt == DType::F32 ? 1e-5 : dt == DType::BF16 ? 1e-2 : 2e-3;
    expect_close(to_vec(y), ry, tol, tol, "y");
    expect_close(to_vec(rstd), rrstd, 1e-5, 1e-6, "rstd");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RmsNormForward, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(RmsNormBackward, MatchesFiniteDifferencesAndAccumulatesWeightGrad) {
  const int64_t N = 5, C = 23;
  const auto vx = random_vec(size_t(N * C), 10, -2, 3), vw = random_vec(size_t(C), 11, 0.5, 1.5);
  const auto g = random_vec(size_t(N * C), 20);  // dL/dy
  Tensor x = from_vec(vx, {N, C}), w = from_vec(vw, {C});
  Tensor y = Tensor::empty({N, C}, DType::F32), rstd = Tensor::empty({N}, DType::F32);
  rmsnorm_forward(x, w, float(kEps), y, rstd);
  const auto dw0 = random_vec(size_t(C), 21);
  Tensor dx = Tensor::empty({N, C}, DType::F32), dw = from_vec(dw0, {C});
  rmsnorm_backward(from_vec(g, {N, C}), x, w, rstd, dx, dw);

  std::vector<double> px = to_double(vx), pw = to_double(vw);  // perturbed in place by central_difference
  std::vector<double> dx_ref(px.size()), dw_ref(pw.size());
  auto loss = [&](const std::vector<double>&) {
    std::vector<double> ry, r;
    reference(px, pw, N, C, ry, r);
    double l = 0;
    for (size_t i = 0; i < ry.size(); ++i) l += ry[i] * g[i];
    return l;
  };
  for (size_t i = 0; i < px.size(); ++i) dx_ref[i] = central_difference(px, i, 1e-4, loss);
  for (size_t i = 0; i < pw.size(); ++i) dw_ref[i] = dw0[i] + central_difference(pw, i, 1e-4, loss);
  expect_close(to_vec(dx), dx_ref, 1e-3, 1e-4, "dx");
  expect_close(to_vec(dw), dw_ref, 1e-3, 1e-4, "dw");
}

// bf16 activations with fp32 and bf16 weights: dx within bf16's output rounding of the exact
// gradient of the rounded inputs; dw (fp32 sums of bf16 products) to fp32 accuracy.
TEST(RmsNormBackward, Bf16MatchesDoublePrecisionGradient) {
  const int64_t N = 9, C = 300;
  const DType dt = DType::BF16;
  const auto x = rounded(random_vec(size_t(N * C), 30, -2, 3), dt), dy = rounded(random_vec(size_t(N * C), 31), dt);
  for (DType wt : {DType::F32, dt}) {
    const auto w = rounded(random_vec(size_t(C), 32, 0.5, 1.5), wt);
    Tensor xt = from_vec(x, {N, C}, dt), wtt = from_vec(w, {C}, wt);
    Tensor y = Tensor::empty({N, C}, dt), rstd = Tensor::empty({N}, DType::F32);
    rmsnorm_forward(xt, wtt, float(kEps), y, rstd);
    Tensor dx = Tensor::empty({N, C}, dt), dw = Tensor::zeros({C}, DType::F32);
    rmsnorm_backward(from_vec(dy, {N, C}, dt), xt, wtt, rstd, dx, dw);
    std::vector<double> rdx, rdw;
    reference_backward(to_double(dy), to_double(x), to_double(w), N, C, rdx, rdw);
    expect_close(to_vec(dx), rdx, 1e-2, 1e-2, "dx");
    expect_close(to_vec(dw), rdw, 1e-4, 1e-4, "dw");
  }
}

TEST(RmsNormBackward, DxMayAliasDy) {
  const int64_t N = 4, C = 70;
  Tensor x = random_tensor({N, C}, DType::BF16, 40, -2, 3), w = random_tensor({C}, DType::BF16, 41, 0.5, 1.5);
  Tensor y = Tensor::empty({N, C}, DType::BF16), rstd = Tensor::empty({N}, DType::F32);
  rmsnorm_forward(x, w, float(kEps), y, rstd);
  Tensor dy = random_tensor({N, C}, DType::BF16, 42), dx = Tensor::empty({N, C}, DType::BF16);
  Tensor dw1 = Tensor::zeros({C}, DType::F32), dw2 = Tensor::zeros({C}, DType::F32);
  rmsnorm_backward(dy, x, w, rstd, dx, dw1);
  rmsnorm_backward(dy, x, w, rstd, dy, dw2);  // in place
  EXPECT_TRUE(bitwise_equal(dx, dy));
  EXPECT_TRUE(bitwise_equal(dw1, dw2));
}

TEST(RmsNormBackward, IsBitIdenticalForOneAndTwoThreads) {
  const int64_t N = 64, C = 200;
  Tensor x = random_tensor({N, C}, DType::F32, 50), w = random_tensor({C}, DType::F32, 51);
  Tensor dy = random_tensor({N, C}, DType::F32, 52);
  Tensor y[2], rstd[2], dx[2], dw[2];
  for (int t = 0; t < 2; ++t) {
    y[t] = Tensor::empty({N, C}, DType::F32);
    rstd[t] = Tensor::empty({N}, DType::F32);
    dx[t] = Tensor::empty({N, C}, DType::F32);
    dw[t] = Tensor::zeros({C}, DType::F32);
    with_threads(t + 1, [&] {
      rmsnorm_forward(x, w, float(kEps), y[t], rstd[t]);
      rmsnorm_backward(dy, x, w, rstd[t], dx[t], dw[t]);
    });
  }
  EXPECT_TRUE(bitwise_equal(y[0], y[1]));
  EXPECT_TRUE(bitwise_equal(rstd[0], rstd[1]));
  EXPECT_TRUE(bitwise_equal(dx[0], dx[1]));
  EXPECT_TRUE(bitwise_equal(dw[0], dw[1]));
}

class RmsNormAddCpu : public ::testing::TestWithParam<DType> {};

TEST_P(RmsNormAddCpu, IsAddThenRmsNormAndRmsNormBackwardThenAdd) {
  const DType dt = GetParam();
  const int64_t N = 37, C = 100;
  Tensor x = random_tensor({N, C}, dt, 1, -2, 3), r = random_tensor({N, C}, dt, 2);
  Tensor w = random_tensor({C}, dt, 3, 0.5, 1.5);
  Tensor sum = Tensor::empty({N, C}, dt), y = Tensor::empty({N, C}, dt), rstd = Tensor::empty({N}, DType::F32);
  add_rmsnorm_forward(x, r, w, 1e-5f, sum, y, rstd);

  Tensor sum_ref = Tensor::empty({N, C}, dt), y_ref = Tensor::empty({N, C}, dt);
  Tensor rstd_ref = Tensor::empty({N}, DType::F32);
  add(x, r, sum_ref);
  rmsnorm_forward(sum_ref, w, 1e-5f, y_ref, rstd_ref);
  EXPECT_TRUE(bitwise_equal(sum, sum_ref));
  EXPECT_TRUE(bitwise_equal(y, y_ref));
  EXPECT_TRUE(bitwise_equal(rstd, rstd_ref));

  // sum written over x, then over r.
  for (int over = 0; over < 2; ++over) {
    Tensor a = Tensor::empty({N, C}, dt), b = Tensor::empty({N, C}, dt), y2 = Tensor::empty({N, C}, dt);
    a.copy_from(x);
    b.copy_from(r);
    const Tensor& target = over == 0 ? a : b;
    add_rmsnorm_forward(a, b, w, 1e-5f, target, y2, rstd);
    EXPECT_TRUE(bitwise_equal(target, sum_ref)) << over;
    EXPECT_TRUE(bitwise_equal(y2, y_ref)) << over;
  }

  Tensor dy = random_tensor({N, C}, dt, 5), dres = random_tensor({N, C}, dt, 6);
  Tensor dw = random_tensor({C}, DType::F32, 7), dw_ref = random_tensor({C}, DType::F32, 7);
  Tensor dx = Tensor::empty({N, C}, dt), dx_ref = Tensor::empty({N, C}, dt);
  rmsnorm_backward_add(dy, sum, w, rstd_ref, dres, dx, dw);
  rmsnorm_backward(dy, sum, w, rstd_ref, dx_ref, dw_ref);
  add(dx_ref, dres, dx_ref);
  EXPECT_TRUE(bitwise_equal(dx, dx_ref));
  EXPECT_TRUE(bitwise_equal(dw, dw_ref));

  Tensor in_place = Tensor::empty({N, C}, dt), dw2 = random_tensor({C}, DType::F32, 7);  // dx written over dy
  in_place.copy_from(dy);
  rmsnorm_backward_add(in_place, sum, w, rstd_ref, dres, in_place, dw2);
  EXPECT_TRUE(bitwise_equal(in_place, dx_ref));
  EXPECT_TRUE(bitwise_equal(dw2, dw_ref));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RmsNormAddCpu, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// qkv [B, T, G, H + 2, D] (H = Q/G query heads per group) as float vectors, with helpers to
// gather its q heads [B T G H, D] and k heads [B T G, D] in memory order.
struct Qkv {
  int64_t B, T, G, H, D;
  int64_t heads() const { return B * T * G * (H + 2); }
  Shape shape() const { return {B, T, G, H + 2, D}; }
  // Heads of `kind` (0: q, 1: k, 2: v) in memory order, as a [rows, D] vector.
  std::vector<float> gather(const std::vector<float>& v, int kind) const {
    std::vector<float> out;
    for (int64_t h = 0; h < heads(); ++h) {
      const int64_t i = h % (H + 2);
      if ((kind == 0 && i < H) || (kind == 1 && i == H) || (kind == 2 && i == H + 1))
        out.insert(out.end(), v.begin() + h * D, v.begin() + (h + 1) * D);
    }
    return out;
  }
  // rstd of the q heads (kind 0) or k heads (kind 1) from the [B T G (H + 1)] statistics.
  std::vector<float> gather_rstd(const std::vector<float>& r, int kind) const {
    std::vector<float> out;
    for (size_t i = 0; i < r.size(); ++i)
      if ((int64_t(i) % (H + 1) < H) == (kind == 0)) out.push_back(r[i]);
    return out;
  }
};

class QkRmsNormCpu : public ::testing::TestWithParam<DType> {};

TEST_P(QkRmsNormCpu, IsRmsNormOfEachHeadWithValueHeadsCopied) {
  const DType dt = GetParam();
  const Qkv L{2, 3, 2, 3, 40};
  const int64_t nq = L.B * L.T * L.G * L.H, nk = L.B * L.T * L.G, D = L.D;
  for (DType wt : {dt, DType::F32}) {
    Tensor qkv = random_tensor(L.shape(), dt, 60, -2, 3);
    Tensor qw = random_tensor({D}, wt, 61, 0.5, 1.5), kw = random_tensor({D}, wt, 62, 0.5, 1.5);
    Tensor out = Tensor::empty(L.shape(), dt), rstd = Tensor::empty({nq + nk}, DType::F32);
    qk_rmsnorm_forward(qkv, qw, kw, int(L.G), 1e-6f, out, rstd);

    const auto vin = to_vec(qkv), vout = to_vec(out), vrstd = to_vec(rstd);
    const Tensor xq = from_vec(L.gather(vin, 0), {nq, D}, dt), xk = from_vec(L.gather(vin, 1), {nk, D}, dt);
    Tensor yq = Tensor::empty({nq, D}, dt), yk = Tensor::empty({nk, D}, dt);
    Tensor rq = Tensor::empty({nq}, DType::F32), rk = Tensor::empty({nk}, DType::F32);
    rmsnorm_forward(xq, qw, 1e-6f, yq, rq);
    rmsnorm_forward(xk, kw, 1e-6f, yk, rk);
    EXPECT_TRUE(bitwise_equal(from_vec(L.gather(vout, 0), {nq, D}, dt), yq));
    EXPECT_TRUE(bitwise_equal(from_vec(L.gather(vout, 1), {nk, D}, dt), yk));
    EXPECT_EQ(L.gather(vout, 2), L.gather(vin, 2));
    EXPECT_EQ(L.gather_rstd(vrstd, 0), to_vec(rq));
    EXPECT_EQ(L.gather_rstd(vrstd, 1), to_vec(rk));

    Tensor dout = random_tensor(L.shape(), dt, 63);
    Tensor dqkv = Tensor::empty(L.shape(), dt);
    Tensor dqw = random_tensor({D}, DType::F32, 64), dkw = random_tensor({D}, DType::F32, 65);
    Tensor dqw_ref = random_tensor({D}, DType::F32, 64), dkw_ref = random_tensor({D}, DType::F32, 65);
    qk_rmsnorm_backward(dout, qkv, qw, kw, int(L.G), rstd, dqkv, dqw, dkw);
    const auto vdout = to_vec(dout), vdqkv = to_vec(dqkv);
    Tensor dxq = Tensor::empty({nq, D}, dt), dxk = Tensor::empty({nk, D}, dt);
    rmsnorm_backward(from_vec(L.gather(vdout, 0), {nq, D}, dt), xq, qw, rq, dxq, dqw_ref);
    rmsnorm_backward(from_vec(L.gather(vdout, 1), {nk, D}, dt), xk, kw, rk, dxk, dkw_ref);
    EXPECT_TRUE(bitwise_equal(from_vec(L.gather(vdqkv, 0), {nq, D}, dt), dxq));
    EXPECT_TRUE(bitwise_equal(from_vec(L.gather(vdqkv, 1), {nk, D}, dt), dxk));
    EXPECT_EQ(L.gather(vdqkv, 2), L.gather(vdout, 2));
    EXPECT_TRUE(bitwise_equal(dqw, dqw_ref));
    EXPECT_TRUE(bitwise_equal(dkw, dkw_ref));

    // dqkv_in written over dqkv_out.
    Tensor in_place = Tensor::empty(L.shape(), dt);
    in_place.copy_from(dout);
    Tensor dqw2 = random_tensor({D}, DType::F32, 64), dkw2 = random_tensor({D}, DType::F32, 65);
    qk_rmsnorm_backward(in_place, qkv, qw, kw, int(L.G), rstd, in_place, dqw2, dkw2);
    EXPECT_TRUE(bitwise_equal(in_place, dqkv));
    EXPECT_TRUE(bitwise_equal(dqw2, dqw));
    EXPECT_TRUE(bitwise_equal(dkw2, dkw));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, QkRmsNormCpu, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(QkRmsNormCpuBackward, MatchesFiniteDifferences) {
  const Qkv L{1, 2, 2, 2, 12};
  const int64_t D = L.D, n = L.heads() * D;
  const auto vx = random_vec(size_t(n), 70, -2, 3), vqw = random_vec(size_t(D), 71, 0.5, 1.5);
  const auto vkw = random_vec(size_t(D), 72, 0.5, 1.5), g = random_vec(size_t(n), 73);
  Tensor x = from_vec(vx, L.shape()), qw = from_vec(vqw, {D}), kw = from_vec(vkw, {D});
  Tensor out = Tensor::empty(L.shape(), DType::F32), rstd = Tensor::empty({L.B * L.T * L.G * (L.H + 1)}, DType::F32);
  qk_rmsnorm_forward(x, qw, kw, int(L.G), float(kEps), out, rstd);
  Tensor dx = Tensor::empty(L.shape(), DType::F32), dqw = Tensor::zeros({D}, DType::F32),
         dkw = Tensor::zeros({D}, DType::F32);
  qk_rmsnorm_backward(from_vec(g, L.shape()), x, qw, kw, int(L.G), rstd, dx, dqw, dkw);

  std::vector<double> px = to_double(vx), pq = to_double(vqw), pk = to_double(vkw);
  auto loss = [&](const std::vector<double>&) {  // sum over heads of y * g, each head normalised alone
    double l = 0;
    for (int64_t h = 0; h < L.heads(); ++h) {
      const int64_t i = h % (L.H + 2);
      std::vector<double> xh(px.begin() + h * D, px.begin() + (h + 1) * D), yh, r;
      if (i == L.H + 1) yh = xh;
      else reference(xh, i < L.H ? pq : pk, 1, D, yh, r);
      for (int64_t c = 0; c < D; ++c) l += yh[size_t(c)] * g[size_t(h * D + c)];
    }
    return l;
  };
  std::vector<double> fdx(px.size()), fdq(pq.size()), fdk(pk.size());
  for (size_t i = 0; i < px.size(); ++i) fdx[i] = central_difference(px, i, 1e-4, loss);
  for (size_t i = 0; i < pq.size(); ++i) fdq[i] = central_difference(pq, i, 1e-4, loss);
  for (size_t i = 0; i < pk.size(); ++i) fdk[i] = central_difference(pk, i, 1e-4, loss);
  expect_close(to_vec(dx), fdx, 1e-3, 1e-4, "dqkv_in");
  expect_close(to_vec(dqw), fdq, 1e-3, 1e-4, "dq_w");
  expect_close(to_vec(dkw), fdk, 1e-3, 1e-4, "dk_w");
}

// The dispatcher's checks (MT_CHECK: message, then abort).
TEST(QkRmsNormChecks, RejectsBadShapesAndInPlaceForward) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenMP threads exist
  Tensor qkv = Tensor::zeros({1, 2, 2, 3, 8}, DType::F32), w = Tensor::zeros({8}, DType::F32);
  Tensor out = Tensor::empty({1, 2, 2, 3, 8}, DType::F32), rstd = Tensor::empty({8}, DType::F32);
  qk_rmsnorm_forward(qkv, w, w, 2, 1e-6f, out, rstd);  // the shape it takes
  EXPECT_DEATH(qk_rmsnorm_forward(qkv, w, w, 1, 1e-6f, out, rstd), "n_query_groups = 1");
  EXPECT_DEATH(qk_rmsnorm_forward(qkv.view({2, 2, 3, 8}), w, w, 2, 1e-6f, out.view({2, 2, 3, 8}), rstd),
               "must be \\[B, T, G, Q/G \\+ 2, D\\]");
  EXPECT_DEATH(qk_rmsnorm_forward(qkv, w, w, 2, 1e-6f, qkv, rstd), "must not alias qkv_in");
  Tensor rstd_bad = Tensor::empty({12}, DType::F32);
  EXPECT_DEATH(qk_rmsnorm_forward(qkv, w, w, 2, 1e-6f, out, rstd_bad), "rstd must have 8 elements");
}

}  // namespace
}  // namespace mt
