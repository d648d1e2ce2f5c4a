// LayerNorm on CUDA against the CPU backend: forward (y, mean, rstd) and backward (dx and the
// accumulated dw, db) for each dtype with fp32 or input-dtype weights, widths that take the
// vectorised and the scalar paths; dx aliasing dy; run-to-run bit reproducibility.
#include "kernels/layernorm.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct LnCase {
  DType x, w;
};

class CudaLayerNorm : public ::testing::TestWithParam<LnCase> {};

TEST_P(CudaLayerNorm, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, wt] = GetParam();
  for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 8}, {37, 100}, {300, 768}, {5, 2056}}) {
    Tensor x = random_tensor({N, C}, dt, 1, -2, 3);
    Tensor w = random_tensor({C}, wt, 2, 0.5, 1.5), b = random_tensor({C}, wt, 3);
    Tensor y = Tensor::empty({N, C}, dt), mean = Tensor::empty({N}, DType::F32), rstd = Tensor::empty({N}, DType::F32);
    layernorm_forward(x, w, b, 1e-5f, y, mean, rstd);
    Tensor xg = to_gpu(x), wg = to_gpu(w), bg = to_gpu(b);
    Tensor yg = poisoned_like(y), meang = poisoned_like(mean), rstdg = poisoned_like(rstd);
    layernorm_forward(xg, wg, bg, 1e-5f, yg, meang, rstdg);
    EXPECT_LT(rel_err(yg, y), tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(meang, mean), 1e-5);
    EXPECT_LT(rel_err(rstdg, rstd), 1e-5);

    Tensor dy = random_tensor({N, C}, dt, 4);
    Tensor dw = random_tensor({C}, DType::F32, 5), db = random_tensor({C}, DType::F32, 6);
    Tensor dwg = to_gpu(dw), dbg = to_gpu(db), dx = Tensor::empty({N, C}, dt), dxg = poisoned_like(dx);
    layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
    layernorm_backward(to_gpu(dy), xg, wg, meang, rstdg, dxg, dwg, dbg);
    EXPECT_LT(rel_err(dxg, dx), dt == DType::F32 ? 1e-4 : tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(dwg, dw), 1e-5);
    EXPECT_LT(rel_err(dbg, db), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLayerNorm,
                         ::testing::Values(LnCase{DType::F32, DType::F32}, LnCase{DType::BF16, DType::BF16},
                                           LnCase{DType::BF16, DType::F32}, LnCase{DType::F16, DType::F16}));

TEST(CudaLayerNormBackward, DxMayAliasDyAndIsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 513, C = 384;
  Tensor x = to_gpu(random_tensor({N, C}, DType::BF16, 7)), w = to_gpu(random_tensor({C}, DType::F32, 8));
  Tensor b = to_gpu(random_tensor({C}, DType::F32, 9)), dy = random_tensor({N, C}, DType::BF16, 10);
  Tensor y = poisoned({N, C}, DType::BF16), mean = poisoned({N}, DType::F32), rstd = poisoned({N}, DType::F32);
  layernorm_forward(x, w, b, 1e-5f, y, mean, rstd);
  Tensor dx[2], dw[2], db[2];
  for (int r = 0; r < 2; ++r) {
    dx[r] = poisoned({N, C}, DType::BF16);
    dw[r] = Tensor::zeros({C}, DType::F32, gpu());
    db[r] = Tensor::zeros({C}, DType::F32, gpu());
    layernorm_backward(to_gpu(dy), x, w, mean, rstd, dx[r], dw[r], db[r]);
  }
  EXPECT_TRUE(same_bits(dx[0], dx[1]));
  EXPECT_TRUE(same_bits(dw[0], dw[1]));
  EXPECT_TRUE(same_bits(db[0], db[1]));
  Tensor inplace = to_gpu(dy), dw2 = Tensor::zeros({C}, DType::F32, gpu()), db2 = Tensor::zeros({C}, DType::F32, gpu());
  layernorm_backward(inplace, x, w, mean, rstd, inplace, dw2, db2);
  EXPECT_TRUE(same_bits(inplace, dx[0]));
  EXPECT_TRUE(same_bits(dw2, dw[0]));
  EXPECT_TRUE(same_bits(db2, db[0]));
}

}  // namespace
}  // namespace mt
