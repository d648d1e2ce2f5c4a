// layernorm: forward against a double-precision reference, backward against central finite
// differences of L = sum(y * G) taken on that reference, and thread-count determinism.
#include "kernels/kernel_testing.h"
#include "kernels/layernorm.h"

namespace mt {
namespace {

using namespace mt::testing;

constexpr double kEps = 1e-5;

// y, mean, rstd of the rows of x [N, C] in double.
void reference(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b, int64_t N,
               int64_t C, std::vector<double>& y, std::vector<double>& mean, std::vector<double>& rstd) {
  y.assign(size_t(N * C), 0);
  mean.assign(size_t(N), 0);
  rstd.assign(size_t(N), 0);
  for (int64_t r = 0; r < N; ++r) {
    double mu = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mu += x[r * C + c];
    mu /= double(C);
    for (int64_t c = 0; c < C; ++c) var += (x[r * C + c] - mu) * (x[r * C + c] - mu);
    const double rs = 1 / std::sqrt(var / double(C) + kEps);
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = (x[r * C + c] - mu) * rs * w[c] + b[c];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

struct Inputs {
  int64_t N, C;
  std::vector<float> x, w, b;
  Inputs(int64_t n, int64_t c, uint32_t seed)
      : N(n),
        C(c),
        x(random_vec(size_t(n * c), seed, -2, 3)),
        w(random_vec(size_t(c), seed + 1, 0.5, 1.5)),
        b(random_vec(size_t(c), seed + 2)) {}
};

class LayerNormForward : public ::testing::TestWithParam<DType> {};

TEST_P(LayerNormForward, MatchesDoublePrecisionReference) {
  const DType dt = GetParam();
  Inputs in(6, 37, 1);
  const auto x = rounded(in.x, dt), w = rounded(in.w, dt), b = rounded(in.b, dt);
  Tensor y = Tensor::empty({in.N, in.C}, dt), mean = Tensor::empty({in.N}, DType::F32),
         rstd = Tensor::empty({in.N}, DType::F32);
  layernorm_forward(from_vec(x, {in.N, in.C}, dt), from_vec(w, {in.C}, dt), from_vec(b, {in.C}, dt), float(kEps), y,
                    mean, rstd);
  std::vector<double> ry, rmean, rrstd;
  reference(to_double(x), to_double(w), to_double(b), in.N, in.C, ry, rmean, rrstd);
  // fp32 to ~1e-5 relative; half dtypes are dominated by the output rounding (2^-8 for bf16).
  const double tol = dt == DType::F32 ? 1e-5 : dt == DType::BF16 ? 1e-2 : 2e-3;
  expect_close(to_vec(y), ry, tol, tol, "y");
  expect_close(to_vec(mean), rmean, 1e-5, 1e-6, "mean");
  expect_close(to_vec(rstd), rrstd, 1e-5, 1e-6, "rstd");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LayerNormForward, ::testing::Values(DType::F32, DType::BF16, DType::F16));

TEST(LayerNormBackward, MatchesFiniteDifferencesAndAccumulatesWeightGrads) {
  Inputs in(5, 23, 10);
  const int64_t N = in.N, C = in.C;
  const auto g = random_vec(size_t(N * C), 20);  // dL/dy
  Tensor x = from_vec(in.x, {N, C}), w = from_vec(in.w, {C}), b = from_vec(in.b, {C});
  Tensor y = Tensor::empty({N, C}, DType::F32), mean = Tensor::empty({N}, DType::F32),
         rstd = Tensor::empty({N}, DType::F32);
  layernorm_forward(x, w, b, float(kEps), y, mean, rstd);
  const auto dw0 = random_vec(size_t(C), 21), db0 = random_vec(size_t(C), 22);
  Tensor dx = Tensor::empty({N, C}, DType::F32), dw = from_vec(dw0, {C}), db = from_vec(db0, {C});
  layernorm_backward(from_vec(g, {N, C}), x, w, mean, rstd, dx, dw, db);

  std::vector<double> vx = to_double(in.x), vw = to_double(in.w), vb = to_double(in.b);
  auto loss = [&](const std::vector<double>&) {
    std::vector<double> ry, m, r;
    reference(vx, vw, vb, N, C, ry, m, r);
    double l = 0;
    for (size_t i = 0; i < ry.size(); ++i) l += ry[i] * g[i];
    return l;
  };
  std::vector<double> fdx(vx.size()), fdw(vw.size()), fdb(vb.size());
  for (size_t i = 0; i < vx.size(); ++i) fdx[i] = central_difference(vx, i, 1e-4, loss);
  for (size_t i = 0; i < vw.size(); ++i) fdw[i] = dw0[i] + central_difference(vw, i, 1e-4, loss);
  for (size_t i = 0; i < vb.size(); ++i) fdb[i] = db0[i] + central_difference(vb, i, 1e-4, loss);
  expect_close(to_vec(dx), fdx, 1e-3, 1e-4, "dx");
  expect_close(to_vec(dw), fdw, 1e-3, 1e-4, "dw");
  expect_close(to_vec(db), fdb, 1e-3, 1e-4, "db");
}

TEST(LayerNormBackward, DxMayAliasDy) {
  Inputs in(4, 70, 30);
  const int64_t N = in.N, C = in.C;
  Tensor x = from_vec(in.x, {N, C}, DType::BF16), w = from_vec(in.w, {C}, DType::BF16),
         b = from_vec(in.b, {C}, DType::BF16);
  Tensor y = Tensor::empty({N, C}, DType::BF16), mean = Tensor::empty({N}, DType::F32),
         rstd = Tensor::empty({N}, DType::F32);
  layernorm_forward(x, w, b, float(kEps), y, mean, rstd);
  Tensor dy = random_tensor({N, C}, DType::BF16, 31), dx = Tensor::empty({N, C}, DType::BF16);
  Tensor dw1 = Tensor::zeros({C}, DType::F32), db1 = Tensor::zeros({C}, DType::F32);
  Tensor dw2 = Tensor::zeros({C}, DType::F32), db2 = Tensor::zeros({C}, DType::F32);
  layernorm_backward(dy, x, w, mean, rstd, dx, dw1, db1);
  layernorm_backward(dy, x, w, mean, rstd, dy, dw2, db2);  // in place
  EXPECT_TRUE(bitwise_equal(dx, dy));
  EXPECT_TRUE(bitwise_equal(dw1, dw2));
  EXPECT_TRUE(bitwise_equal(db1, db2));
}

TEST(LayerNormBackward, IsBitIdenticalForOneAndTwoThreads) {
  const int64_t N = 64, C = 200;
  Tensor x = random_tensor({N, C}, DType::F32, 40), w = random_tensor({C}, DType::F32, 41),
         b = random_tensor({C}, DType::F32, 42), dy = random_tensor({N, C}, DType::F32, 43);
  Tensor y = Tensor::empty({N, C}, DType::F32), mean = Tensor::empty({N}, DType::F32),
         rstd = Tensor::empty({N}, DType::F32);
  layernorm_forward(x, w, b, float(kEps), y, mean, rstd);
  Tensor dx[2], dw[2], db[2];
  for (int t = 0; t < 2; ++t) {
    dx[t] = Tensor::empty({N, C}, DType::F32);
    dw[t] = Tensor::zeros({C}, DType::F32);
    db[t] = Tensor::zeros({C}, DType::F32);
    with_threads(t + 1, [&] { layernorm_backward(dy, x, w, mean, rstd, dx[t], dw[t], db[t]); });
  }
  EXPECT_TRUE(bitwise_equal(dx[0], dx[1]));
  EXPECT_TRUE(bitwise_equal(dw[0], dw[1]));
  EXPECT_TRUE(bitwise_equal(db[0], db[1]));
}

}  // namespace
}  // namespace mt
