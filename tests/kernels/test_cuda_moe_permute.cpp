// MoE token permutation on CUDA against the CPU backend, on the same random routing plan (dropped
// choices, padding rows) and inputs, for each dtype and k = 1, 2, 4. Widths C take the 16-byte
// pack kernels (C a multiple of the pack: 4 fp32, 8 bf16/fp16 values) and the per-element ones
// (odd C; C = 12, a pack for fp32 but not for 16-bit types), misaligned tensors take the latter
// too, and a large plan needs several grid passes. GPU outputs start as NaN.
//
// Tolerances: permute, permute_backward and unpermute_backward's dy run the CPU's fp32 operations
// in the CPU's order, so they are bit-identical. unpermute's fp32 sums of k products may differ by
// the CPU compiler's choice of fused multiply-adds, at most 2 k 2^-24 (sum of |p y|) <= 2 k^2 2^-24
// (|p|, |y| <= 1), and then round to neighbouring values of the dtype: |got - want| <= that +
// one ulp (2^-23, 2^-7, 2^-10 of |want| for fp32, bf16, fp16). dprobs (fp32) sums C products in
// another order than the CPU: relative error (2-norm) below 1e-5.
#include <string>
#include <tuple>

#include "kernels/moe_permute.h"
#include "moe_plan.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

double ulp(DType dt) { return dt == DType::BF16 ? 0x1p-7 : dt == DType::F16 ? 0x1p-10 : 0x1p-23; }

void check(const MoePlan& p, int64_t C, DType dt, int64_t shift) {
  const int k = p.topk;
  const int64_t N = p.tokens, R = p.rows;
  SCOPED_TRACE(::testing::Message() << name_of(dt) << " k=" << k << " N=" << N << " C=" << C << " shift=" << shift);
  const Tensor x = random_tensor({N, C}, dt, 1), drows = random_tensor({R, C}, dt, 2);
  const Tensor y = random_tensor({R, C}, dt, 3), dout = random_tensor({N, C}, dt, 4);
  const Tensor probs = random_tensor({N, k}, DType::F32, 5, 0.0f, 1.0f);

  Tensor out = Tensor::empty({R, C}, dt), dx = Tensor::empty({N, C}, dt), un = Tensor::empty({N, C}, dt);
  Tensor dy = Tensor::empty({R, C}, dt), dprobs = Tensor::empty({N, k}, DType::F32);
  moe_permute(x, p.row_source_t, k, out);
  moe_permute_backward(drows, p.row_map_t, k, dx);
  moe_unpermute(y, p.row_map_t, probs, un);
  moe_unpermute_backward(dout, y, p.row_map_t, p.row_source_t, probs, dy, dprobs);

  const Tensor map_g = to_gpu(p.row_map_t), src_g = to_gpu(p.row_source_t), probs_g = to_gpu(probs);
  const Tensor x_g = to_gpu_shifted(x, shift), drows_g = to_gpu_shifted(drows, shift);
  const Tensor y_g = to_gpu_shifted(y, shift), dout_g = to_gpu_shifted(dout, shift);
  Tensor out_g = poisoned_shifted({R, C}, dt, shift), dx_g = poisoned_shifted({N, C}, dt, shift);
  Tensor un_g = poisoned_shifted({N, C}, dt, shift), dy_g = poisoned_shifted({R, C}, dt, shift);
  Tensor dprobs_g = poisoned({N, k}, DType::F32);
  moe_permute(x_g, src_g, k, out_g);
  moe_permute_backward(drows_g, map_g, k, dx_g);
  moe_unpermute(y_g, map_g, probs_g, un_g);
  moe_unpermute_backward(dout_g, y_g, map_g, src_g, probs_g, dy_g, dprobs_g);

  EXPECT_TRUE(same_bits(out_g, out)) << "permute";
  EXPECT_TRUE(same_bits(dx_g, dx)) << "permute_backward";
  EXPECT_TRUE(same_bits(dy_g, dy)) << "unpermute_backward dy";
  expect_close(to_vec(to_host(un_g)), to_vec(un), ulp(dt), 2.0 * k * k * 0x1p-24, "unpermute");
  EXPECT_LT(rel_err(dprobs_g, dprobs), 1e-5) << "dprobs";
}

class CudaMoePermute : public ::testing::TestWithParam<std::tuple<DType, int>> {};

TEST_P(CudaMoePermute, MatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, k] = GetParam();
  for (int64_t C : {1, 8, 12, 13, 64, 1000, 1001}) check(random_moe_plan(37, k, 6, uint32_t(C)), C, dt, 0);
}

TEST_P(CudaMoePermute, MisalignedTensorsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, k] = GetParam();
  for (int64_t C : {8, 64}) check(random_moe_plan(23, k, 5, uint32_t(C) + 1), C, dt, 1);
}

// More rows, tokens and (token, slot) pairs than one pass of the grid covers.
TEST_P(CudaMoePermute, LargePlanMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, k] = GetParam();
  check(random_moe_plan(8192, k, 8, 7, /*drop=*/0.1, /*pad_to=*/16), 64, dt, 0);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndTopk, CudaMoePermute,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 2, 4)),
                         [](const auto& info) {  // e.g. bf16_k2
                           return std::string(name_of(std::get<0>(info.param))) + "_k" +
                                  std::to_string(std::get<1>(info.param));
                         });

// Launch to launch, the GPU results are the same bits (no atomics, fixed reduction order).
TEST(CudaMoePermuteDeterminism, RepeatedCallsGiveTheSameBits) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const MoePlan p = random_moe_plan(512, 4, 8, 9);
  const int64_t C = 256, N = p.tokens, R = p.rows;
  const Tensor y = to_gpu(random_tensor({R, C}, DType::BF16, 10)), dout = to_gpu(random_tensor({N, C}, DType::BF16, 11));
  const Tensor probs = to_gpu(random_tensor({N, 4}, DType::F32, 12, 0.0f, 1.0f));
  const Tensor map_g = to_gpu(p.row_map_t), src_g = to_gpu(p.row_source_t);
  Tensor un[2], dy[2], dprobs[2];
  for (int i = 0; i < 2; ++i) {
    un[i] = poisoned({N, C}, DType::BF16);
    dy[i] = poisoned({R, C}, DType::BF16);
    dprobs[i] = poisoned({N, 4}, DType::F32);
    moe_unpermute(y, map_g, probs, un[i]);
    moe_unpermute_backward(dout, y, map_g, src_g, probs, dy[i], dprobs[i]);
  }
  EXPECT_TRUE(same_bits(un[0], un[1]));
  EXPECT_TRUE(same_bits(dy[0], dy[1]));
  EXPECT_TRUE(same_bits(dprobs[0], dprobs[1]));
}

}  // namespace
}  // namespace mt
