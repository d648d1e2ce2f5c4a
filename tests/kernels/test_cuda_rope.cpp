// RoPE on CUDA against the CPU backend, for each dtype, over shapes that take the 16-byte pack
// kernel (rot_dim / 2 and D multiples of the pack width, aligned pointers) and the per-pair
// kernel (odd pair counts, D not a pack multiple, a misaligned qkv or table), grouped queries,
// partial rotation and tables longer than T; value heads and the unrotated tail must keep
// their bits, and backward must match too.
#include <cmath>

#include "kernels/rope.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct Case {
  int64_t B, T, G, q_per_group, D;
  int rot_dim;
  int64_t table_rows;
};

// fp32 cos/sin [rows, rot_dim / 2] of a base-10000 rope.
std::pair<Tensor, Tensor> tables(int64_t rows, int rot_dim) {
  const int64_t half = rot_dim / 2;
  std::vector<float> c(size_t(rows * half)), s(size_t(rows * half));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(t) * std::pow(10000.0, -2.0 * double(i) / rot_dim);
      c[size_t(t * half + i)] = float(std::cos(a));
      s[size_t(t * half + i)] = float(std::sin(a));
    }
  return {from_vec(c, {rows, half}), from_vec(s, {rows, half})};
}

const Case kCases[] = {
    {2, 9, 2, 4, 128, 128, 16},  // Llama-like: packs for every dtype, grouped queries
    {1, 5, 4, 1, 64, 32, 5},     // partial rotation, packs for every dtype
    {2, 3, 1, 2, 16, 8, 7},      // half = 4: packs for fp32 only
    {1, 4, 2, 3, 12, 6, 4},      // half = 3: per pair everywhere
    {1, 6, 3, 2, 40, 24, 8},     // half = 12: packs for fp32, per pair for 16-bit
    {2, 2, 2, 2, 20, 16, 2},     // half = 8 but D = 20: 16-bit heads misaligned, per pair
    {1, 3, 1, 1, 2, 2, 3},       // the smallest head
    {4, 512, 8, 2, 64, 64, 512}, // more items than one grid pass (grid-stride loop)
};

class CudaRope : public ::testing::TestWithParam<DType> {};

void check_case(const Case& c, DType dt, int64_t qkv_shift, int64_t table_shift) {
  const Shape shape{c.B, c.T, c.G, c.q_per_group + 2, c.D};
  auto [cos, sin] = tables(c.table_rows, c.rot_dim);
  const Tensor x = random_tensor(shape, dt, 1, -2, 2);
  Tensor want = x.to(Device::cpu()), gpu_x = to_gpu_shifted(x, qkv_shift);
  Tensor cg = to_gpu_shifted(cos, table_shift), sg = to_gpu_shifted(sin, table_shift);
  rope_forward(want, cos, sin, int(c.G), c.rot_dim);
  rope_forward(gpu_x, cg, sg, int(c.G), c.rot_dim);
  const std::string where = std::string(name_of(dt)) + " D=" + std::to_string(c.D) + " R=" +
                            std::to_string(c.rot_dim) + " shift=" + std::to_string(qkv_shift) + "/" +
                            std::to_string(table_shift);
  EXPECT_LT(rel_err(gpu_x, want), tol_for(dt, 1e-6)) << where;

  // Untouched elements (value heads, channels >= rot_dim) equal the input exactly.
  const auto got = to_vec(to_host(gpu_x)), in = to_vec(x);
  const int64_t S = c.q_per_group + 2;
  for (size_t e = 0; e < got.size(); ++e) {
    const int64_t head = int64_t(e) / c.D, i = int64_t(e) % c.D;
    if (head % S == S - 1 || i >= c.rot_dim) {
      ASSERT_EQ(std::memcmp(&got[e], &in[e], 4), 0) << where << " e=" << e;
    }
  }

  const Tensor g = random_tensor(shape, dt, 2, -2, 2);
  Tensor dwant = g.to(Device::cpu()), gpu_g = to_gpu_shifted(g, qkv_shift);
  rope_backward(dwant, cos, sin, int(c.G), c.rot_dim);
  rope_backward(gpu_g, cg, sg, int(c.G), c.rot_dim);
  EXPECT_LT(rel_err(gpu_g, dwant), tol_for(dt, 1e-6)) << where << " backward";
}

TEST_P(CudaRope, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : kCases) check_case(c, GetParam(), 0, 0);
}

// A qkv or a table that does not start on 16 bytes takes the per-pair kernel.
TEST_P(CudaRope, MisalignedTensorsMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case c{2, 9, 2, 4, 128, 128, 16};
  check_case(c, GetParam(), 1, 0);
  check_case(c, GetParam(), 0, 1);
}

// In fp32, backward undoes forward on the device too.
TEST(CudaRopeFp32, BackwardUndoesForward) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : {kCases[0], kCases[3]}) {
    auto [cos, sin] = tables(c.table_rows, c.rot_dim);
    const Tensor x = random_tensor({c.B, c.T, c.G, c.q_per_group + 2, c.D}, DType::F32, 3);
    Tensor xg = to_gpu(x), cg = to_gpu(cos), sg = to_gpu(sin);
    rope_forward(xg, cg, sg, int(c.G), c.rot_dim);
    rope_backward(xg, cg, sg, int(c.G), c.rot_dim);
    EXPECT_LT(rel_err(xg, x), 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaRope, ::testing::Values(DType::F32, DType::BF16, DType::F16));

}  // namespace
}  // namespace mt
