// add_layernorm_forward and layernorm_backward_add on CUDA (one kernel each where the CPU runs
// add + LayerNorm) against the CPU backend: the residual sum, y, mean, rstd, and dx (with the
// residual gradient added) and the accumulated dw, db, for each dtype with fp32 or input-dtype
// weights and shapes that take each path (backward: the fused one-pass kernel, staging dres in
// shared memory, and the two-pass fallback, vectorised and scalar);
// outputs poisoned first; sum written over x or r and dx over dy; run-to-run bit reproducibility.
#include "kernels/layernorm.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct LnCase {
  DType x, w;
};

// [N, C] and the backward path each takes at 16 bits | fp32. The fused kernel stages dres in
// shared memory (up to 8 packs a lane: 32 KB a block).
const std::pair<int64_t, int64_t> kShapes[] = {
    {1, 8},        // fused
    {37, 100},     // two-pass scalar (C % 8 != 0) | fused, lanes 25-31 idle
    {300, 768},    // fused: 3 | 6 packs a lane
    {1000, 768},   // the same over 16 blocks, the last one partly filled
    {65, 1000},    // fused, the last pack only on some lanes; a second block with one row
    {3, 1024},     // fused, fewer rows than one block's warps
    {1000, 2048},  // fused at 8 packs a lane | two-pass vectorised
    {5, 2056},     // two-pass vectorised
    {3, 4104},     // two-pass vectorised
    {50, 771},     // two-pass scalar
};

class CudaLayerNormAdd : public ::testing::TestWithParam<LnCase> {};

TEST_P(CudaLayerNormAdd, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, wt] = GetParam();
  for (auto [N, C] : kShapes) {
    Tensor x = random_tensor({N, C}, dt, 1, -2, 3), r = random_tensor({N, C}, dt, 2);
    Tensor w = random_tensor({C}, wt, 3, 0.5, 1.5), b = random_tensor({C}, wt, 4);
    Tensor sum = Tensor::empty({N, C}, dt), y = Tensor::empty({N, C}, dt);
    Tensor mean = Tensor::empty({N}, DType::F32), rstd = Tensor::empty({N}, DType::F32);
    add_layernorm_forward(x, r, w, b, 1e-5f, sum, y, mean, rstd);
    Tensor xg = to_gpu(x), rg = to_gpu(r), wg = to_gpu(w), bg = to_gpu(b);
    Tensor sumg = poisoned_like(sum), yg = poisoned_like(y), meang = poisoned_like(mean), rstdg = poisoned_like(rstd);
    add_layernorm_forward(xg, rg, wg, bg, 1e-5f, sumg, yg, meang, rstdg);
    EXPECT_TRUE(same_bits(sumg, sum)) << N << "x" << C;  // one rounding of x + r on both sides
    EXPECT_LT(rel_err(yg, y), tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(meang, mean), 1e-5);
    EXPECT_LT(rel_err(rstdg, rstd), 1e-5);

    Tensor dy = random_tensor({N, C}, dt, 5), dres = random_tensor({N, C}, dt, 6);
    Tensor dw = random_tensor({C}, DType::F32, 7), db = random_tensor({C}, DType::F32, 8);
    Tensor dwg = to_gpu(dw), dbg = to_gpu(db), dx = Tensor::empty({N, C}, dt), dxg = poisoned_like(dx);
    layernorm_backward_add(dy, sum, w, mean, rstd, dres, dx, dw, db);
    layernorm_backward_add(to_gpu(dy), sumg, wg, meang, rstdg, to_gpu(dres), dxg, dwg, dbg);
    EXPECT_LT(rel_err(dxg, dx), dt == DType::F32 ? 1e-4 : tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(dwg, dw), 1e-5) << N << "x" << C;
    EXPECT_LT(rel_err(dbg, db), 1e-5) << N << "x" << C;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLayerNormAdd,
                         ::testing::Values(LnCase{DType::F32, DType::F32}, LnCase{DType::BF16, DType::BF16},
                                           LnCase{DType::BF16, DType::F32}, LnCase{DType::F16, DType::F16}));

TEST(CudaLayerNormAddEdge, InPlaceAndBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 513;
  // Backward: fused with dres loaded with dy and x (2 packs a lane), fused with dres loaded two
  // packs at a time (8 packs), two-pass scalar.
  for (int64_t C : {384, 2048, 771}) {
    Tensor x = to_gpu(random_tensor({N, C}, DType::BF16, 9)), r = to_gpu(random_tensor({N, C}, DType::BF16, 10));
    Tensor w = to_gpu(random_tensor({C}, DType::F32, 11)), b = to_gpu(random_tensor({C}, DType::F32, 12));
    Tensor dy = to_gpu(random_tensor({N, C}, DType::BF16, 13));
    Tensor dres = to_gpu(random_tensor({N, C}, DType::BF16, 14));
    Tensor sum[2], y[2], mean[2], rstd[2], dx[2], dw[2], db[2];
    for (int k = 0; k < 2; ++k) {
      sum[k] = poisoned({N, C}, DType::BF16);
      y[k] = poisoned({N, C}, DType::BF16);
      mean[k] = poisoned({N}, DType::F32);
      rstd[k] = poisoned({N}, DType::F32);
      add_layernorm_forward(x, r, w, b, 1e-5f, sum[k], y[k], mean[k], rstd[k]);
      dx[k] = poisoned({N, C}, DType::BF16);
      dw[k] = Tensor::zeros({C}, DType::F32, gpu());
      db[k] = Tensor::zeros({C}, DType::F32, gpu());
      layernorm_backward_add(dy, sum[k], w, mean[k], rstd[k], dres, dx[k], dw[k], db[k]);
    }
    for (Tensor* t : {sum, y, mean, rstd, dx, dw, db}) EXPECT_TRUE(same_bits(t[0], t[1])) << C;

    // sum over x, then over r; dx over dy.
    for (int over_r = 0; over_r < 2; ++over_r) {
      Tensor xs = to_gpu(to_host(x)), rs = to_gpu(to_host(r)), y2 = poisoned({N, C}, DType::BF16);
      Tensor& target = over_r ? rs : xs;
      add_layernorm_forward(xs, rs, w, b, 1e-5f, target, y2, mean[1], rstd[1]);
      EXPECT_TRUE(same_bits(target, sum[0])) << C << " over r: " << over_r;
      EXPECT_TRUE(same_bits(y2, y[0])) << C << " over r: " << over_r;
    }
    Tensor inplace = to_gpu(to_host(dy)), dw2 = Tensor::zeros({C}, DType::F32, gpu());
    Tensor db2 = Tensor::zeros({C}, DType::F32, gpu());
    layernorm_backward_add(inplace, sum[0], w, mean[0], rstd[0], dres, inplace, dw2, db2);
    EXPECT_TRUE(same_bits(inplace, dx[0])) << C;
    EXPECT_TRUE(same_bits(dw2, dw[0])) << C;
    EXPECT_TRUE(same_bits(db2, db[0])) << C;
  }
}

}  // namespace
}  // namespace mt
