// RMSNorm on CUDA against the CPU backend: rmsnorm_forward / add_rmsnorm_forward (sum, y, rstd)
// and rmsnorm_backward / rmsnorm_backward_add (dx and the accumulated dw) for each dtype with
// fp32 or input-dtype weights, at shapes that take each kernel path; qk_rmsnorm forward and
// backward over head shapes that take its vectorised and scalar paths; dx over dy, sum over x,
// dqkv_in over dqkv_out; run-to-run bit reproducibility. CUDA outputs start poisoned.
#include "kernels/rmsnorm.h"

#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct NormCase {
  DType x, w;
};

std::string case_name(const ::testing::TestParamInfo<NormCase>& info) {
  return std::string(name_of(info.param.x)) + "_w" + name_of(info.param.w);
}

// [N, C] and the paths each takes at 16 bits | fp32 (P = 8 | 4 elements a 16-byte pack).
// Forward: registers up to 16 packs a lane (C <= 4096 | 2048), else the two-pass 16-byte loop,
// scalar when C % P != 0. Backward: fused up to 8 packs a lane (C <= 2048 | 1024) with 8 warps a
// block and blocks of 64 rows, else the column reduction + dx kernel, scalar when C % P != 0.
const std::pair<int64_t, int64_t> kShapes[] = {
    {1, 8},        // 1 pack, one | two lanes busy
    {37, 100},     // scalar (C % 8 != 0) | 1 pack, lanes 25-31 idle
    {300, 768},    // 4 packs (3 used) | 8 packs (6 used)
    {1000, 768},   // fused over 16 blocks, the last partly filled
    {65, 1000},    // the last pack only on some lanes; a second block with one row
    {3, 1024},     // fewer rows than a block's warps
    {1000, 2048},  // fused at 8 packs | forward at 16 packs, two-pass backward
    {5, 2056},     // forward at 16 packs (9 used) | two-pass loop
    {7, 4096},     // forward at 16 packs | two-pass loop; backward two-pass
    {3, 8192},     // two-pass 16-byte loop everywhere
    {50, 771},     // scalar everywhere
    {4, 3},        // scalar, fewer columns than lanes
};

class CudaRmsNorm : public ::testing::TestWithParam<NormCase> {};

TEST_P(CudaRmsNorm, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, wt] = GetParam();
  for (auto [N, C] : kShapes) {
    Tensor x = random_tensor({N, C}, dt, 1, -2, 3), w = random_tensor({C}, wt, 2, 0.5, 1.5);
    Tensor y = Tensor::empty({N, C}, dt), rstd = Tensor::empty({N}, DType::F32);
    rmsnorm_forward(x, w, 1e-5f, y, rstd);
    Tensor xg = to_gpu(x), wg = to_gpu(w), yg = poisoned_like(y), rstdg = poisoned_like(rstd);
    rmsnorm_forward(xg, wg, 1e-5f, yg, rstdg);
    EXPECT_LT(rel_err(yg, y), tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(rstdg, rstd), 1e-5) << N << "x" << C;

    Tensor dy = random_tensor({N, C}, dt, 3), dw = random_tensor({C}, DType::F32, 4);
    Tensor dwg = to_gpu(dw), dx = Tensor::empty({N, C}, dt), dxg = poisoned_like(dx);
    rmsnorm_backward(dy, x, w, rstd, dx, dw);
    rmsnorm_backward(to_gpu(dy), xg, wg, rstdg, dxg, dwg);
    EXPECT_LT(rel_err(dxg, dx), dt == DType::F32 ? 1e-4 : tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(dwg, dw), 1e-5) << N << "x" << C;
  }
}

TEST_P(CudaRmsNorm, FusedResidualAddMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, wt] = GetParam();
  for (auto [N, C] : kShapes) {
    Tensor x = random_tensor({N, C}, dt, 5, -2, 3), r = random_tensor({N, C}, dt, 6);
    Tensor w = random_tensor({C}, wt, 7, 0.5, 1.5);
    Tensor sum = Tensor::empty({N, C}, dt), y = Tensor::empty({N, C}, dt), rstd = Tensor::empty({N}, DType::F32);
    add_rmsnorm_forward(x, r, w, 1e-5f, sum, y, rstd);
    Tensor wg = to_gpu(w), sumg = poisoned_like(sum), yg = poisoned_like(y), rstdg = poisoned_like(rstd);
    add_rmsnorm_forward(to_gpu(x), to_gpu(r), wg, 1e-5f, sumg, yg, rstdg);
    EXPECT_TRUE(same_bits(sumg, sum)) << N << "x" << C;  // one rounding of x + r on both sides
    EXPECT_LT(rel_err(yg, y), tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(rstdg, rstd), 1e-5) << N << "x" << C;

    Tensor dy = random_tensor({N, C}, dt, 8), dres = random_tensor({N, C}, dt, 9);
    Tensor dw = random_tensor({C}, DType::F32, 10), dwg = to_gpu(dw);
    Tensor dx = Tensor::empty({N, C}, dt), dxg = poisoned_like(dx);
    rmsnorm_backward_add(dy, sum, w, rstd, dres, dx, dw);
    rmsnorm_backward_add(to_gpu(dy), sumg, wg, rstdg, to_gpu(dres), dxg, dwg);
    EXPECT_LT(rel_err(dxg, dx), dt == DType::F32 ? 1e-4 : tol_for(dt)) << N << "x" << C;
    EXPECT_LT(rel_err(dwg, dw), 1e-5) << N << "x" << C;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaRmsNorm,
                         ::testing::Values(NormCase{DType::F32, DType::F32}, NormCase{DType::BF16, DType::BF16},
                                           NormCase{DType::BF16, DType::F32}, NormCase{DType::F16, DType::F16},
                                           NormCase{DType::F16, DType::F32}),
                         case_name);

// Outputs written over inputs give the bits of separate outputs, and two runs the same bits.
TEST(CudaRmsNormEdge, InPlaceAndBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 513;
  // Backward: fused at 2 and 8 packs a lane; two-pass 16-byte; two-pass scalar.
  for (int64_t C : {384, 2048, 4104, 771}) {
    Tensor x = to_gpu(random_tensor({N, C}, DType::BF16, 11)), r = to_gpu(random_tensor({N, C}, DType::BF16, 12));
    Tensor w = to_gpu(random_tensor({C}, DType::F32, 13, 0.5, 1.5));
    Tensor dy = to_gpu(random_tensor({N, C}, DType::BF16, 14)), dres = to_gpu(random_tensor({N, C}, DType::BF16, 15));
    Tensor sum[2], y[2], rstd[2], dx[2], dw[2];
    for (int k = 0; k < 2; ++k) {
      sum[k] = poisoned({N, C}, DType::BF16);
      y[k] = poisoned({N, C}, DType::BF16);
      rstd[k] = poisoned({N}, DType::F32);
      dx[k] = poisoned({N, C}, DType::BF16);
      dw[k] = Tensor::zeros({C}, DType::F32, gpu());
      add_rmsnorm_forward(x, r, w, 1e-5f, sum[k], y[k], rstd[k]);
      rmsnorm_backward_add(dy, sum[k], w, rstd[k], dres, dx[k], dw[k]);
    }
    EXPECT_TRUE(same_bits(sum[0], sum[1])) << C;
    EXPECT_TRUE(same_bits(y[0], y[1])) << C;
    EXPECT_TRUE(same_bits(dx[0], dx[1])) << C;
    EXPECT_TRUE(same_bits(dw[0], dw[1])) << C;

    for (int over = 0; over < 2; ++over) {  // sum written over x, then over r
      Tensor a = to_gpu(to_host(x)), b = to_gpu(to_host(r)), y2 = poisoned({N, C}, DType::BF16);
      Tensor rstd2 = poisoned({N}, DType::F32);
      const Tensor& target = over == 0 ? a : b;
      add_rmsnorm_forward(a, b, w, 1e-5f, target, y2, rstd2);
      EXPECT_TRUE(same_bits(target, sum[0])) << C << " " << over;
      EXPECT_TRUE(same_bits(y2, y[0])) << C << " " << over;
    }
    Tensor in_place = to_gpu(to_host(dy)), dw2 = Tensor::zeros({C}, DType::F32, gpu());
    rmsnorm_backward_add(in_place, sum[0], w, rstd[0], dres, in_place, dw2);  // dx written over dy
    EXPECT_TRUE(same_bits(in_place, dx[0])) << C;
    EXPECT_TRUE(same_bits(dw2, dw[0])) << C;

    Tensor dx_plain = poisoned({N, C}, DType::BF16), dw3 = Tensor::zeros({C}, DType::F32, gpu());
    Tensor in_place2 = to_gpu(to_host(dy)), dw4 = Tensor::zeros({C}, DType::F32, gpu());
    rmsnorm_backward(dy, sum[0], w, rstd[0], dx_plain, dw3);
    rmsnorm_backward(in_place2, sum[0], w, rstd[0], in_place2, dw4);
    EXPECT_TRUE(same_bits(in_place2, dx_plain)) << C;
    EXPECT_TRUE(same_bits(dw4, dw3)) << C;
  }
}

// Past 64K rows the fused kernel's grid stops growing (1024 blocks) and each warp walks more
// rows. dw here is a sum of 70000 rows in fp32 on both sides, in different orders: 1e-4.
TEST(CudaRmsNormEdge, ManyRowsPerWarpMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 70000, C = 128;
  Tensor x = random_tensor({N, C}, DType::BF16, 16, -2, 3), w = random_tensor({C}, DType::F32, 17, 0.5, 1.5);
  Tensor dy = random_tensor({N, C}, DType::BF16, 18);
  Tensor y = Tensor::empty({N, C}, DType::BF16), rstd = Tensor::empty({N}, DType::F32);
  rmsnorm_forward(x, w, 1e-5f, y, rstd);
  Tensor xg = to_gpu(x), wg = to_gpu(w), yg = poisoned_like(y), rstdg = poisoned_like(rstd);
  rmsnorm_forward(xg, wg, 1e-5f, yg, rstdg);
  Tensor dw = random_tensor({C}, DType::F32, 19), dwg = to_gpu(dw);
  Tensor dx = Tensor::empty({N, C}, DType::BF16), dxg = poisoned_like(dx);
  rmsnorm_backward(dy, x, w, rstd, dx, dw);
  rmsnorm_backward(to_gpu(dy), xg, wg, rstdg, dxg, dwg);
  EXPECT_LT(rel_err(yg, y), tol_for(DType::BF16));
  EXPECT_LT(rel_err(dxg, dx), tol_for(DType::BF16));
  EXPECT_LT(rel_err(dwg, dw), 1e-4);
}

// qkv [B, T, G, H + 2, D], H query heads a group.
struct QkShape {
  int64_t B, T, G, H, D;
};
// D: 16-byte packs at every dtype (128, 256, 64), fp32 only (100, 36), none (33); H = 1 (one
// query head a group: the q reduction's row map without a division), H > 1; one group and many.
const QkShape kQkShapes[] = {
    {2, 3, 2, 2, 128}, {1, 5, 1, 1, 64}, {2, 7, 4, 4, 128}, {1, 3, 2, 3, 100},
    {1, 2, 3, 1, 33},  {2, 2, 2, 2, 256}, {1, 300, 2, 3, 36}, {3, 1, 1, 8, 128},
};

class CudaQkRmsNorm : public ::testing::TestWithParam<NormCase> {};

TEST_P(CudaQkRmsNorm, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, wt] = GetParam();
  for (auto [B, T, G, H, D] : kQkShapes) {
    const Shape shape{B, T, G, H + 2, D};
    Tensor qkv = random_tensor(shape, dt, 20, -2, 3);
    Tensor qw = random_tensor({D}, wt, 21, 0.5, 1.5), kw = random_tensor({D}, wt, 22, 0.5, 1.5);
    Tensor out = Tensor::empty(shape, dt), rstd = Tensor::empty({B * T * G * (H + 1)}, DType::F32);
    qk_rmsnorm_forward(qkv, qw, kw, int(G), 1e-6f, out, rstd);
    Tensor qkvg = to_gpu(qkv), qwg = to_gpu(qw), kwg = to_gpu(kw);
    Tensor outg = poisoned_like(out), rstdg = poisoned_like(rstd);
    qk_rmsnorm_forward(qkvg, qwg, kwg, int(G), 1e-6f, outg, rstdg);
    const std::string what = std::to_string(H) + " heads of " + std::to_string(D);
    EXPECT_LT(rel_err(outg, out), tol_for(dt)) << what;
    EXPECT_LT(rel_err(rstdg, rstd), 1e-5) << what;

    Tensor dout = random_tensor(shape, dt, 23);
    Tensor dqw = random_tensor({D}, DType::F32, 24), dkw = random_tensor({D}, DType::F32, 25);
    Tensor dqwg = to_gpu(dqw), dkwg = to_gpu(dkw), dqkv = Tensor::empty(shape, dt), dqkvg = poisoned_like(dqkv);
    qk_rmsnorm_backward(dout, qkv, qw, kw, int(G), rstd, dqkv, dqw, dkw);
    qk_rmsnorm_backward(to_gpu(dout), qkvg, qwg, kwg, int(G), rstdg, dqkvg, dqwg, dkwg);
    EXPECT_LT(rel_err(dqkvg, dqkv), dt == DType::F32 ? 1e-4 : tol_for(dt)) << what;
    EXPECT_LT(rel_err(dqwg, dqw), 1e-5) << what;
    EXPECT_LT(rel_err(dkwg, dkw), 1e-5) << what;

    // dqkv_in written over dqkv_out: the same bits.
    Tensor in_place = to_gpu(dout);
    Tensor dqw2 = to_gpu(random_tensor({D}, DType::F32, 24)), dkw2 = to_gpu(random_tensor({D}, DType::F32, 25));
    qk_rmsnorm_backward(in_place, qkvg, qwg, kwg, int(G), rstdg, in_place, dqw2, dkw2);
    EXPECT_TRUE(same_bits(in_place, dqkvg)) << what;
    EXPECT_TRUE(same_bits(dqw2, dqwg)) << what;
    EXPECT_TRUE(same_bits(dkw2, dkwg)) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaQkRmsNorm,
                         ::testing::Values(NormCase{DType::F32, DType::F32}, NormCase{DType::BF16, DType::BF16},
                                           NormCase{DType::BF16, DType::F32}, NormCase{DType::F16, DType::F16}),
                         case_name);

}  // namespace
}  // namespace mt
