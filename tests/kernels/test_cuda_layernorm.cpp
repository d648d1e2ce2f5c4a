// LayerNorm on CUDA against the CPU backend: forward (y, mean, rstd) and backward (dx and the
// accumulated dw, db) for each dtype with fp32 or input-dtype weights, at shapes that take each
// backward path (the fused one-pass kernel and the two-pass fallback, vectorised and scalar) and
// the forward's vectorised and scalar paths; dx aliasing dy; run-to-run bit reproducibility.
#include "kernels/layernorm.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct LnCase {
  DType x, w;
};

// [N, C] and the backward path each takes at 16 bits | fp32. The fused kernel covers C a
// multiple of the 16-byte pack up to 8 packs a lane (2048 | 1024 columns), with 8 warps a block
// and blocks of 64 rows; wider or unpackable rows take the two-pass fallback.
const std::pair<int64_t, int64_t> kShapes[] = {
    {1, 8},        // fused, one | two lanes busy
    {37, 100},     // two-pass scalar (C % 8 != 0) | fused, lanes 25-31 idle
    {300, 768},    // fused: 3 | 6 packs a lane (GPT-2's width)
    {1000, 768},   // fused, 16 blocks, the last one partly filled
    {65, 1000},    // fused, the last pack only on some lanes (4 | 8 packs); a second block with one row
    {3, 1024},     // fused, fewer rows than one block's warps: 4 | 8 packs
    {1000, 2048},  // fused at 8 packs a lane | two-pass vectorised (16 packs)
    {5, 2056},     // two-pass vectorised (9 | 17 packs a lane)
    {3, 4104},     // two-pass vectorised
    {50, 771},     // two-pass scalar
};

class CudaLayerNorm : public ::testing::TestWithParam<LnCase> {};

TEST_P(CudaLayerNorm, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, wt] = GetParam();
  for (auto [N, C] : kShapes) {
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
    EXPECT_LT(rel_err(dwg, dw), 1e-5) << N << "x" << C;
    EXPECT_LT(rel_err(dbg, db), 1e-5) << N << "x" << C;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLayerNorm,
                         ::testing::Values(LnCase{DType::F32, DType::F32}, LnCase{DType::BF16, DType::BF16},
                                           LnCase{DType::BF16, DType::F32}, LnCase{DType::F16, DType::F16}));

TEST(CudaLayerNormBackward, DxMayAliasDyAndIsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 513;
  // Fused at 2 and 8 packs a lane; two-pass vectorised; two-pass scalar.
  for (int64_t C : {384, 2048, 4104, 771}) {
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
    EXPECT_TRUE(same_bits(dx[0], dx[1])) << C;
    EXPECT_TRUE(same_bits(dw[0], dw[1])) << C;
    EXPECT_TRUE(same_bits(db[0], db[1])) << C;
    Tensor inplace = to_gpu(dy), dw2 = Tensor::zeros({C}, DType::F32, gpu());
    Tensor db2 = Tensor::zeros({C}, DType::F32, gpu());
    layernorm_backward(inplace, x, w, mean, rstd, inplace, dw2, db2);
    EXPECT_TRUE(same_bits(inplace, dx[0])) << C;
    EXPECT_TRUE(same_bits(dw2, dw[0])) << C;
    EXPECT_TRUE(same_bits(db2, db[0])) << C;
  }
}

// Past 64K rows the fused kernel's grid stops growing (1024 blocks) and each warp walks more
// rows. dw, db here are sums of 70000 rows in fp32 on both sides, in different orders: 1e-4.
TEST(CudaLayerNormBackward, ManyRowsPerWarpMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 70000, C = 128;
  Tensor x = random_tensor({N, C}, DType::BF16, 11, -2, 3), w = random_tensor({C}, DType::F32, 12, 0.5, 1.5);
  Tensor b = random_tensor({C}, DType::F32, 13), dy = random_tensor({N, C}, DType::BF16, 14);
  Tensor y = Tensor::empty({N, C}, DType::BF16), mean = Tensor::empty({N}, DType::F32);
  Tensor rstd = Tensor::empty({N}, DType::F32);
  layernorm_forward(x, w, b, 1e-5f, y, mean, rstd);
  Tensor xg = to_gpu(x), wg = to_gpu(w), yg = poisoned_like(y), meang = poisoned_like(mean);
  Tensor rstdg = poisoned_like(rstd);
  layernorm_forward(xg, wg, to_gpu(b), 1e-5f, yg, meang, rstdg);
  Tensor dw = random_tensor({C}, DType::F32, 15), db = random_tensor({C}, DType::F32, 16);
  Tensor dwg = to_gpu(dw), dbg = to_gpu(db), dx = Tensor::empty({N, C}, DType::BF16), dxg = poisoned_like(dx);
  layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
  layernorm_backward(to_gpu(dy), xg, wg, meang, rstdg, dxg, dwg, dbg);
  EXPECT_LT(rel_err(dxg, dx), tol_for(DType::BF16));
  EXPECT_LT(rel_err(dwg, dw), 1e-4);
  EXPECT_LT(rel_err(dbg, db), 1e-4);
}

}  // namespace
}  // namespace mt
