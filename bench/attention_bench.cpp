// Attention kernel throughput on one GPU: causal forward and backward TFLOP/s (attention.h's
// FLOP counts: forward 2*B*H*T^2*D, backward 5*B*H*T^2*D) for sequence 1024/2048/4096 and head size
// 64/128 at hidden size H*D = 2048 and B*T = 8192 tokens, bf16, dropout 0, for each CUDA
// implementation (cuDNN fused flash attention, the native kernel).
//
//   build/attention_bench [native|cudnn]...       (default: both)
//   MT_ATTENTION_DETERMINISTIC=1 build/attention_bench cudnn   # cuDNN's deterministic backward
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda/cuda_backend.h"
#include "core/cuda/cuda_check.h"
#include "cuda_timing.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"

using namespace mt;

namespace {

// The first calls build cuDNN's graph and plans.
double time_ms(const std::function<void()>& fn, int iters) { return bench::ms_per_call(fn, 3, iters); }

}  // namespace

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "attention_bench: no CUDA device\n");
    return 1;
  }
  std::vector<std::string> backends;
  for (int i = 1; i < argc; ++i) backends.push_back(argv[i]);
  if (backends.empty()) backends = {"cudnn", "native"};
  cudaDeviceProp prop{};
  MT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention_bench on %s, bf16, causal, dropout 0, cuDNN backward deterministic: %s\n", prop.name,
              mt::attention_deterministic() ? "yes" : "no");
  std::printf("%-7s %5s %4s %4s %4s %9s %9s %9s %9s %9s\n", "backend", "T", "D", "B", "H", "fwd ms", "bwd ms",
              "fwd TF/s", "bwd TF/s", "f+b TF/s");
  for (const std::string& name : backends) {
    const bool cudnn = name == "cudnn";
    if (cudnn && !attention_has_cudnn()) {
      std::printf("%-7s (this build has no cuDNN attention)\n", name.c_str());
      continue;
    }
    set_attention_backend(cudnn ? AttentionBackend::Cudnn : AttentionBackend::Native);
    for (int64_t T : {1024, 2048, 4096})
      for (int64_t D : {64, 128}) {
        const int64_t B = 8192 / T, H = 2048 / D;
        const Device dev = Device::cuda(0);
        Tensor qkv = Tensor::empty({B, T, H, 3, D}, DType::BF16, dev);
        Tensor dout = Tensor::empty({B, T, H, D}, DType::BF16, dev);
        Tensor out = Tensor::empty({B, T, H, D}, DType::BF16, dev);
        Tensor lse = Tensor::empty({B, H, T}, DType::F32, dev);
        Tensor dqkv = Tensor::empty({B, T, H, 3, D}, DType::BF16, dev);
        fill_normal(qkv, 1.0f, 1, 1);
        fill_normal(dout, 1.0f, 2, 1);
        const AttentionConfig cfg{int(H), int(D), 0.0f, 0, 0};
        const int iters = cudnn ? 20 : 5;
        const double fwd = time_ms([&] { attention_forward(qkv, out, lse, cfg); }, iters);
        const double bwd = time_ms([&] { attention_backward(dout, qkv, out, lse, dqkv, cfg); }, iters);
        const double f = double(B) * H * T * T * D;
        std::printf("%-7s %5lld %4lld %4lld %4lld %9.3f %9.3f %9.1f %9.1f %9.1f\n", name.c_str(), (long long)T,
                    (long long)D, (long long)B, (long long)H, fwd, bwd, 2 * f / fwd / 1e9, 5 * f / bwd / 1e9,
                    7 * f / (fwd + bwd) / 1e9);
        std::fflush(stdout);
      }
  }
  MT_CUDA_CHECK(cudaDeviceSynchronize());
  return 0;
}
