// Causal flash attention on CUDA against the CPU backend: out, lse and dqkv for each dtype, head
// sizes that fill 1..4 dims per lane (16, 64, 80, 128), sequence lengths that are not multiples
// of the 32/64-row tiles (1, 37, 130), with and without attention dropout (the same Philox mask
// on both backends); and run-to-run bit reproducibility of forward and backward.
// Each CUDA implementation is also forced in turn (set_attention_backend): cuDNN's fused flash
// attention (bf16/fp16, dropout 0; tolerance 1e-2 relative, as its P and dS are rounded to the
// storage type) and the native kernel; the default (Auto) picks cuDNN where it applies.
// Grouped-query attention (8 query heads in 1, 2, 4 or 8 groups) on both, the native kernel also
// with dropout in a rank's global coordinates (batch_offset, head_offset, total_heads).
#include "kernels/attention.h"

#include "core/error.h"
#include "core/rng.h"
#include "test_cuda_common.h"

namespace mt {
namespace {

using namespace mt::cuda_testing;

struct AttnCase {
  DType dt;
  int64_t D;
  float p;
};

std::string attn_name(const ::testing::TestParamInfo<AttnCase>& info) {
  return std::string(name_of(info.param.dt)) + "_D" + std::to_string(info.param.D) +
         (info.param.p > 0 ? "_dropout" : "");
}

// Selects a CUDA attention implementation for one scope.
struct BackendScope {
  AttentionBackend prev = attention_backend();
  explicit BackendScope(AttentionBackend b) { set_attention_backend(b); }
  ~BackendScope() { set_attention_backend(prev); }
};

// Whether the CUDA side of a case runs cuDNN (so the looser tolerances of its bf16/fp16 math apply).
bool runs_cudnn(DType dt, int64_t D, float p) {
  return attention_has_cudnn() && attention_backend() != AttentionBackend::Native && dt != DType::F32 &&
         p == 0.0f && D % 8 == 0;
}

// CUDA against the CPU for attention of B samples under cfg (its heads, groups and dropout mask).
void check_config_matches_cpu(const AttentionConfig& cfg, DType dt, int64_t B, bool cudnn,
                              const std::vector<int64_t>& seq_lengths) {
  const int64_t H = cfg.n_heads, G = cfg.groups(), D = cfg.head_dim;
  for (int64_t T : seq_lengths) {
    const Shape qkv_t{B, T, G, H / G + 2, D};
    Tensor qkv = random_tensor(qkv_t, dt, 1, -2, 2);
    Tensor out = Tensor::empty({B, T, H, D}, dt), lse = Tensor::empty({B, H, T}, DType::F32);
    attention_forward(qkv, out, lse, cfg);
    Tensor qkv_g = to_gpu(qkv), out_g = poisoned_like(out), lse_g = poisoned_like(lse);
    attention_forward(qkv_g, out_g, lse_g, cfg);
    EXPECT_LT(rel_err(out_g, out), cudnn ? 1e-2 : tol_for(dt, 1e-4)) << "out, T=" << T;
    EXPECT_LT(rel_err(lse_g, lse), cudnn ? 1e-4 : 1e-5) << "lse, T=" << T;

    // Backward from the same saved tensors on both sides (the CPU's out and lse).
    Tensor dout = random_tensor({B, T, H, D}, dt, 2);
    Tensor dqkv = Tensor::empty(qkv_t, dt), dqkv_g = poisoned_like(dqkv);
    attention_backward(dout, qkv, out, lse, dqkv, cfg);
    attention_backward(to_gpu(dout), qkv_g, to_gpu(out), to_gpu(lse), dqkv_g, cfg);
    EXPECT_LT(rel_err(dqkv_g, dqkv), cudnn ? 1e-2 : dt == DType::F16 ? 5e-3 : tol_for(dt, 1e-4)) << "dqkv, T=" << T;
  }
}

void check_matches_cpu(DType dt, int64_t D, float p, std::vector<int64_t> seq_lengths = {1, 37, 130}) {
  const AttentionConfig cfg{3, int(D), p, 99, rng_stream("test/cuda_attention")};
  check_config_matches_cpu(cfg, dt, 2, runs_cudnn(dt, D, p), seq_lengths);
}

class CudaAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaAttention, ForwardAndBackwardMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, D, p] = GetParam();
  check_matches_cpu(dt, D, p);
}

// The native kernel forced where Auto would pick cuDNN.
TEST_P(CudaAttention, NativeKernelMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [dt, D, p] = GetParam();
  if (!runs_cudnn(dt, D, p)) GTEST_SKIP() << "the default run already uses the native kernel";
  BackendScope scope(AttentionBackend::Native);
  check_matches_cpu(dt, D, p);
}

// cuDNN forced: a case it cannot run throws instead of falling back, so this proves cuDNN ran.
// T = 1 is left out: cuDNN 9.14's backward rejects s_q = s_kv = 1 (Auto runs the native one there).
TEST_P(CudaAttention, CudnnMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  if (!attention_has_cudnn()) GTEST_SKIP() << "built without cuDNN attention";
  const auto [dt, D, p] = GetParam();
  if (dt == DType::F32 || p > 0.0f) GTEST_SKIP() << "cuDNN path is bf16/fp16 without dropout";
  BackendScope scope(AttentionBackend::Cudnn);
  EXPECT_NO_THROW(check_matches_cpu(dt, D, p, {37, 130}));
}

std::vector<AttnCase> attn_cases() {
  std::vector<AttnCase> cases;
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int64_t D : {16, 64, 80, 128}) cases.push_back({dt, D, 0.0f});
  cases.push_back({DType::F32, 64, 0.1f});
  cases.push_back({DType::BF16, 128, 0.1f});
  cases.push_back({DType::F32, 80, 0.25f});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention, ::testing::ValuesIn(attn_cases()), attn_name);

TEST(CudaAttentionDeterminism, ForwardAndBackwardAreBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 2, T = 257, H = 4, D = 64;
  const AttentionConfig cfg{int(H), int(D), 0.1f, 5, 6};
  Tensor qkv = to_gpu(random_tensor({B, T, H, 3, D}, DType::BF16, 3));
  Tensor dout = to_gpu(random_tensor({B, T, H, D}, DType::BF16, 4));
  Tensor out[2], lse[2], dqkv[2];
  for (int r = 0; r < 2; ++r) {
    out[r] = poisoned({B, T, H, D}, DType::BF16);
    lse[r] = poisoned({B, H, T}, DType::F32);
    dqkv[r] = poisoned({B, T, H, 3, D}, DType::BF16);
    attention_forward(qkv, out[r], lse[r], cfg);
    attention_backward(dout, qkv, out[r], lse[r], dqkv[r], cfg);
  }
  EXPECT_TRUE(same_bits(out[0], out[1]));
  EXPECT_TRUE(same_bits(lse[0], lse[1]));
  EXPECT_TRUE(same_bits(dqkv[0], dqkv[1]));
}

TEST(CudaAttentionDeterminism, CudnnIsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  if (!attention_has_cudnn()) GTEST_SKIP() << "built without cuDNN attention";
  BackendScope scope(AttentionBackend::Cudnn);
  const int64_t B = 2, T = 257, H = 4, D = 64;
  const AttentionConfig cfg{int(H), int(D), 0.0f, 5, 6};
  Tensor qkv = to_gpu(random_tensor({B, T, H, 3, D}, DType::BF16, 3));
  Tensor dout = to_gpu(random_tensor({B, T, H, D}, DType::BF16, 4));
  Tensor out[2], lse[2], dqkv[2];
  for (int r = 0; r < 2; ++r) {
    out[r] = poisoned({B, T, H, D}, DType::BF16);
    lse[r] = poisoned({B, H, T}, DType::F32);
    dqkv[r] = poisoned({B, T, H, 3, D}, DType::BF16);
    attention_forward(qkv, out[r], lse[r], cfg);
    attention_backward(dout, qkv, out[r], lse[r], dqkv[r], cfg);
  }
  EXPECT_TRUE(same_bits(out[0], out[1]));
  EXPECT_TRUE(same_bits(lse[0], lse[1]));
  EXPECT_TRUE(same_bits(dqkv[0], dqkv[1]));
}

// cuDNN's plan from its heuristic alone, and the fastest of all its plans (timed on the shape's
// first call, whose outputs must still be the answer): both match the CPU. Shapes no other test
// uses, so each builds its graph under the setting given.
TEST(CudaAttentionAutotune, HeuristicAndTimedPlansBothMatchCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  if (!attention_has_cudnn()) GTEST_SKIP() << "built without cuDNN attention";
  BackendScope scope(AttentionBackend::Cudnn);
  const bool was = attention_autotune();
  for (bool on : {false, true}) {
    set_attention_autotune(on);
    for (DType dt : {DType::BF16, DType::F16}) check_matches_cpu(dt, 64, 0.0f, {on ? int64_t(211) : int64_t(199)});
  }
  set_attention_autotune(was);
}

TEST(CudaAttentionBackend, CudnnRefusesWhatItCannotRun) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  if (!attention_has_cudnn()) GTEST_SKIP() << "built without cuDNN attention";
  BackendScope scope(AttentionBackend::Cudnn);
  const int64_t B = 1, T = 8, H = 2, D = 64;
  for (auto [dt, p] : {std::pair{DType::F32, 0.0f}, std::pair{DType::BF16, 0.1f}}) {
    const AttentionConfig cfg{int(H), int(D), p, 1, 2};
    Tensor qkv = to_gpu(random_tensor({B, T, H, 3, D}, dt, 1));
    Tensor out = poisoned({B, T, H, D}, dt), lse = poisoned({B, H, T}, DType::F32);
    EXPECT_THROW(attention_forward(qkv, out, lse, cfg), UserError) << name_of(dt) << " p=" << p;
  }
}

TEST(CudaAttentionDeterminism, LongSequenceMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 1, T = 600, H = 2, D = 64;
  const AttentionConfig cfg{int(H), int(D), 0.0f, 0, 0};
  Tensor qkv = random_tensor({B, T, H, 3, D}, DType::F32, 8, -3, 3);
  Tensor out = Tensor::empty({B, T, H, D}, DType::F32), lse = Tensor::empty({B, H, T}, DType::F32);
  attention_forward(qkv, out, lse, cfg);
  Tensor out_g = poisoned_like(out), lse_g = poisoned_like(lse), qkv_g = to_gpu(qkv);
  attention_forward(qkv_g, out_g, lse_g, cfg);
  EXPECT_LT(rel_err(out_g, out), 1e-4);
  EXPECT_LT(rel_err(lse_g, lse), 1e-5);
  Tensor dout = random_tensor({B, T, H, D}, DType::F32, 9);
  Tensor dqkv = Tensor::empty({B, T, H, 3, D}, DType::F32), dqkv_g = poisoned_like(dqkv);
  attention_backward(dout, qkv, out, lse, dqkv, cfg);
  attention_backward(to_gpu(dout), qkv_g, out_g, lse_g, dqkv_g, cfg);
  EXPECT_LT(rel_err(dqkv_g, dqkv), 1e-4);
}

struct GqaCase {
  DType dt;
  int64_t G, D;
  float p;
};

std::string gqa_name(const ::testing::TestParamInfo<GqaCase>& info) {
  return std::string(name_of(info.param.dt)) + "_G" + std::to_string(info.param.G) + "_D" +
         std::to_string(info.param.D) + (info.param.p > 0 ? "_dropout" : "");
}

// 8 query heads in G groups; with dropout, as the rank holding samples [3, 5) and heads [8, 16)
// of 24, so both sides draw the mask at the global coordinates.
AttentionConfig gqa_config(const GqaCase& c) {
  AttentionConfig cfg{8, int(c.D), c.p, 123, rng_stream("test/cuda_attention_gqa")};
  cfg.n_query_groups = int(c.G);
  if (c.p > 0) {
    cfg.batch_offset = 3;
    cfg.head_offset = 8;
    cfg.total_heads = 24;
  }
  return cfg;
}

class CudaGroupedQueryAttention : public ::testing::TestWithParam<GqaCase> {};

// The native kernel: a shared key's dk, dv summed over its group's query heads, and bit
// reproducible run to run (the sums in a fixed order, no atomics).
TEST_P(CudaGroupedQueryAttention, NativeKernelMatchesCpuAndIsBitReproducible) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  BackendScope scope(AttentionBackend::Native);
  const GqaCase c = GetParam();
  const AttentionConfig cfg = gqa_config(c);
  check_config_matches_cpu(cfg, c.dt, 2, false, {1, 37, 130});

  const int64_t B = 2, T = 97, H = cfg.n_heads, G = cfg.groups(), D = c.D;
  Tensor qkv = to_gpu(random_tensor({B, T, G, H / G + 2, D}, c.dt, 3));
  Tensor dout = to_gpu(random_tensor({B, T, H, D}, c.dt, 4));
  Tensor out[2], lse[2], dqkv[2];
  for (int r = 0; r < 2; ++r) {
    out[r] = poisoned({B, T, H, D}, c.dt);
    lse[r] = poisoned({B, H, T}, DType::F32);
    dqkv[r] = poisoned(qkv.shape(), c.dt);
    attention_forward(qkv, out[r], lse[r], cfg);
    attention_backward(dout, qkv, out[r], lse[r], dqkv[r], cfg);
  }
  EXPECT_TRUE(same_bits(out[0], out[1]));
  EXPECT_TRUE(same_bits(lse[0], lse[1]));
  EXPECT_TRUE(same_bits(dqkv[0], dqkv[1]));
}

// cuDNN forced (bf16/fp16, no dropout): K and V of G heads, dK and dV of G heads from its backward;
// 1 < G < H gathers q into a contiguous buffer and scatters dq back.
TEST_P(CudaGroupedQueryAttention, CudnnMatchesCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  if (!attention_has_cudnn()) GTEST_SKIP() << "built without cuDNN attention";
  const GqaCase c = GetParam();
  if (c.dt == DType::F32 || c.p > 0.0f || c.D % 8 != 0) GTEST_SKIP() << "cuDNN path is bf16/fp16 without dropout";
  BackendScope scope(AttentionBackend::Cudnn);
  EXPECT_NO_THROW(check_config_matches_cpu(gqa_config(c), c.dt, 2, true, {37, 130}));
}

INSTANTIATE_TEST_SUITE_P(
    Groups, CudaGroupedQueryAttention,
    ::testing::Values(GqaCase{DType::F32, 2, 16, 0.0f}, GqaCase{DType::F32, 1, 64, 0.0f},
                      GqaCase{DType::F32, 4, 80, 0.1f}, GqaCase{DType::F32, 8, 64, 0.1f},
                      GqaCase{DType::BF16, 2, 64, 0.0f}, GqaCase{DType::BF16, 1, 128, 0.0f},
                      GqaCase{DType::BF16, 8, 64, 0.0f}, GqaCase{DType::BF16, 2, 128, 0.1f},
                      GqaCase{DType::F16, 4, 64, 0.0f}),
    gqa_name);

// An explicit softmax_scale (multi-latent attention's 1/sqrt(qk dim) x mscale^2 on zero-padded
// heads): the native kernel (fp32 with and without dropout) and cuDNN (bf16, its attn_scale) both
// apply it as the CPU does, and it is not the default 1/sqrt(D) (the CPU result differs).
TEST(CudaAttentionSoftmaxScale, NativeAndCudnnApplyTheScaleAsTheCpu) {
  if (mt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (const float p : {0.0f, 0.1f}) {
    AttentionConfig cfg{4, 64, p, 77, rng_stream("test/cuda_attention_scale")};
    cfg.n_query_groups = 4;
    cfg.softmax_scale = 0.37f;
    BackendScope scope(AttentionBackend::Native);
    check_config_matches_cpu(cfg, DType::F32, 2, false, {37, 130});
  }
  if (attention_has_cudnn()) {
    AttentionConfig cfg{4, 64, 0.0f, 0, 0};
    cfg.softmax_scale = 0.37f;
    BackendScope scope(AttentionBackend::Cudnn);
    EXPECT_NO_THROW(check_config_matches_cpu(cfg, DType::BF16, 2, true, {37, 130}));
  }
  // The scale is applied at all: lse differs from the default's.
  const int64_t B = 1, T = 9, H = 2, D = 16;
  Tensor qkv = to_gpu(random_tensor({B, T, H, 3, D}, DType::F32, 5));
  AttentionConfig def{int(H), int(D), 0.0f, 0, 0}, scaled = def;
  scaled.softmax_scale = 0.9f;
  Tensor out = poisoned({B, T, H, D}, DType::F32), lse_def = poisoned({B, H, T}, DType::F32);
  Tensor lse_scaled = poisoned({B, H, T}, DType::F32);
  attention_forward(qkv, out, lse_def, def);
  attention_forward(qkv, out, lse_scaled, scaled);
  EXPECT_GT(rel_err(lse_scaled, lse_def), 1e-3);
}

}  // namespace
}  // namespace mt
