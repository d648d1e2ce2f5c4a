// Grouped GEMM on CUDA against the CPU backend on the same random inputs, for each dtype, with
// groups that have no rows. Covered: the one-launch grouped path (aligned operands: forward and
// dgrad in every dtype, wgrad with fp32 operands) and the cases it leaves to the per-group loop
// (wgrad with 16-bit operands, misaligned tensors, widths whose rows are not 16-byte multiples);
// more calls than the pointer-table ring has slots, each checked after all ran. GPU outputs start
// as NaN (wgrad with beta 0 must overwrite it).
//
// Tolerances (relative error, 2-norm): outputs computed in fp32 and rounded once to the dtype,
// tol_for(dt): 1e-5 fp32, 1e-2 bf16, 2e-3 fp16 (the two backends sum in different orders); the
// fp32 weight gradient 1e-5 for every operand dtype. Groups without rows are exact: forward and
// dgrad have no rows there, wgrad's dw_g is beta dw_g bit for bit (beta 0, 1, 0.5).
#include <limits>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/grouped_gemm.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

const std::vector<int64_t> kCounts = {3, 0, 17, 1, 0, 64, 9};

int64_t total(const std::vector<int64_t>& counts) {
  int64_t m = 0;
  for (int64_t c : counts) m += c;
  return m;
}

void check(const std::vector<int64_t>& counts, int64_t N, int64_t K, DType dt, int64_t shift) {
  SCOPED_TRACE(::testing::Message() << name_of(dt) << " N=" << N << " K=" << K << " shift=" << shift);
  const int64_t G = int64_t(counts.size()), M = total(counts);
  const Tensor x = random_tensor({M, K}, dt, 1), w = random_tensor({G, N, K}, dt, 2);
  const Tensor dy = random_tensor({M, N}, dt, 3);
  Tensor y = Tensor::empty({M, N}, dt), dx = Tensor::empty({M, K}, dt);
  grouped_gemm_forward(x, w, counts, y);
  grouped_gemm_dgrad(dy, w, counts, dx);

  const Tensor x_g = to_gpu_shifted(x, shift), w_g = to_gpu_shifted(w, shift), dy_g = to_gpu_shifted(dy, shift);
  Tensor y_g = poisoned_shifted({M, N}, dt, shift), dx_g = poisoned_shifted({M, K}, dt, shift);
  grouped_gemm_forward(x_g, w_g, counts, y_g);
  grouped_gemm_dgrad(dy_g, w_g, counts, dx_g);
  EXPECT_LT(rel_err(y_g, y), tol_for(dt)) << "forward";
  EXPECT_LT(rel_err(dx_g, dx), tol_for(dt)) << "dgrad";

  for (float beta : {0.0f, 1.0f, 0.5f}) {
    const Tensor dw0 = random_tensor({G, N, K}, DType::F32, 4);
    Tensor dw = Tensor::empty({G, N, K}, DType::F32), dw_g = poisoned_shifted({G, N, K}, DType::F32, shift);
    if (beta != 0.0f) {
      dw.copy_from(dw0);
      dw_g.copy_from(dw0);
    } else {
      dw.copy_from(to_host(dw_g));  // NaN
    }
    grouped_gemm_wgrad(dy, x, counts, dw, beta);
    grouped_gemm_wgrad(dy_g, x_g, counts, dw_g, beta);
    EXPECT_LT(rel_err(dw_g, dw), 1e-5) << "wgrad beta " << beta;
    const Tensor got = to_host(dw_g);
    for (int64_t g = 0; g < G; ++g) {
      if (counts[size_t(g)] == 0) {
        EXPECT_TRUE(bitwise_equal(got.narrow0(g, 1), dw.narrow0(g, 1))) << "empty group " << g << " beta " << beta;
      }
    }
  }
}

class CudaGroupedGemm : public ::testing::TestWithParam<DType> {};

TEST_P(CudaGroupedGemm, MatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  check(kCounts, 64, 128, GetParam(), 0);
  check(kCounts, 48, 40, GetParam(), 0);
  check({0, 0, 0}, 16, 32, GetParam(), 0);  // no rows at all
}

// Operands the grouped launch declines run one GEMM per group, with the same results.
TEST_P(CudaGroupedGemm, UnalignedOperandsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  check(kCounts, 64, 128, GetParam(), 1);
  check(kCounts, 7, 13, GetParam(), 0);  // rows of 7 and 13 values: not 16-byte multiples
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGroupedGemm, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(name_of(info.param)); });

// 150 forward calls, more than the 64 pointer-table slots, with a different grouping each, queued
// behind a long GEMM so the host runs ahead of the device and must wait for slots to come free;
// results are read after all ran: each call's table has to survive until its GEMM used it.
TEST(CudaGroupedGemmRing, ManyQueuedCallsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 32, K = 64, G = 8, calls = 150;
  const Tensor w = random_tensor({G, N, K}, DType::BF16, 5);
  const Tensor w_g = to_gpu(w);
  std::vector<std::vector<int64_t>> counts(static_cast<size_t>(calls));
  std::vector<Tensor> x(counts.size()), x_g(counts.size()), y_g(counts.size());
  for (int64_t i = 0; i < calls; ++i) {
    for (int64_t g = 0; g < G; ++g) counts[size_t(i)].push_back((i + 3 * g) % 7);
    const int64_t M = total(counts[size_t(i)]);
    x[size_t(i)] = random_tensor({M, K}, DType::BF16, uint32_t(100 + i));
    x_g[size_t(i)] = to_gpu(x[size_t(i)]);
    y_g[size_t(i)] = poisoned({M, N}, DType::BF16);
  }
  const int64_t big = 6144;  // an fp32 GEMM of some milliseconds ahead of the grouped ones
  const Tensor a = Tensor::empty({big, big}, DType::F32, gpu());
  fill(a, 1.0f);
  Tensor c = Tensor::empty({big, big}, DType::F32, gpu());
  gemm(a, false, a, true, c);
  for (int64_t i = 0; i < calls; ++i) grouped_gemm_forward(x_g[size_t(i)], w_g, counts[size_t(i)], y_g[size_t(i)]);
  for (int64_t i = 0; i < calls; ++i) {
    Tensor y = Tensor::empty(y_g[size_t(i)].shape(), DType::BF16);
    grouped_gemm_forward(x[size_t(i)], w, counts[size_t(i)], y);
    EXPECT_LT(rel_err(y_g[size_t(i)], y), tol_for(DType::BF16)) << "call " << i;
  }
}

}  // namespace
}  // namespace mt
