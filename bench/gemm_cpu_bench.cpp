// CPU GEMM throughput at the shapes of bench/gpt_cpu_vs_pytorch.py's model (GPT-2 architecture,
// hidden 384, MLP 1536, vocab 4096, batch 4 x seq 256 = 1024 tokens, fp32), through mt::gemm as
// the model calls it: forward y = x W^T (+ bias), input gradient dx = dy W, weight gradient
// dW += dy^T x (beta = 1). Each GEMM is timed alone (median of --repeats timings of --iters
// back-to-back calls after warm-up), so the path's kernel and driver are measured without the
// rest of a training step. MT_CPU_ISA (kernels/cpu_isa.h) picks the path, OMP_NUM_THREADS the
// threads; bench/gemm_cpu_torch.py times torch.matmul at the same shapes.
//
//   build-cpu/gemm_cpu_bench [--iters N] [--repeats R] [--only NAME]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu_isa.h"
#include "kernels/gemm.h"

using namespace mt;

namespace {

struct Shape3 {
  const char* name;
  int64_t m, n, k;
  bool ta, tb, bias, accumulate;
};

constexpr int64_t kTokens = 1024, kHidden = 384, kFfn = 1536, kVocab = 4096;
const Shape3 kShapes[] = {
    {"qkv fwd", kTokens, 3 * kHidden, kHidden, false, true, true, false},
    {"qkv dgrad", kTokens, kHidden, 3 * kHidden, false, false, false, false},
    {"qkv wgrad", 3 * kHidden, kHidden, kTokens, true, false, false, true},
    {"proj fwd", kTokens, kHidden, kHidden, false, true, true, false},
    {"proj dgrad", kTokens, kHidden, kHidden, false, false, false, false},
    {"proj wgrad", kHidden, kHidden, kTokens, true, false, false, true},
    {"fc1 fwd", kTokens, kFfn, kHidden, false, true, true, false},
    {"fc1 dgrad", kTokens, kHidden, kFfn, false, false, false, false},
    {"fc1 wgrad", kFfn, kHidden, kTokens, true, false, false, true},
    {"fc2 fwd", kTokens, kHidden, kFfn, false, true, true, false},
    {"fc2 dgrad", kTokens, kFfn, kHidden, false, false, false, false},
    {"fc2 wgrad", kHidden, kFfn, kTokens, true, false, false, true},
    {"logits fwd", kTokens, kVocab, kHidden, false, true, false, false},
    {"logits dgrad", kTokens, kHidden, kVocab, false, false, false, false},
    {"logits wgrad", kVocab, kHidden, kTokens, true, false, false, true},
};

Tensor random_tensor(int64_t rows, int64_t cols, uint32_t seed) {
  Tensor t = Tensor::empty({rows, cols}, DType::F32);
  float* p = t.data<float>();
  uint32_t s = seed * 2654435761u + 1;
  for (int64_t i = 0; i < rows * cols; ++i) {
    s = s * 1664525u + 1013904223u;
    p[i] = float(int32_t(s >> 8) - (1 << 23)) / float(1 << 23);
  }
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 10, repeats = 5;
  const char* only = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: gemm_cpu_bench [--iters N] [--repeats R] [--only NAME]\n");
      return 2;
    }
  }
  std::printf("path %s, %d threads, median of %d x %d calls\n", cpu_isa_name(cpu_isa()), omp_get_max_threads(),
              repeats, iters);
  std::printf("| GEMM | m x n x k | ms | GFLOP/s | min-max GFLOP/s |\n|---|---|---:|---:|---|\n");
  double total_ms = 0, total_flop = 0;
  for (const Shape3& g : kShapes) {
    if (only && !std::strstr(g.name, only)) continue;
    Tensor a = g.ta ? random_tensor(g.k, g.m, 1) : random_tensor(g.m, g.k, 1);
    Tensor b = g.tb ? random_tensor(g.n, g.k, 2) : random_tensor(g.k, g.n, 2);
    Tensor c = random_tensor(g.m, g.n, 3), bias = random_tensor(1, g.n, 4).view({g.n});
    auto call = [&] { gemm(a, g.ta, b, g.tb, c, 1.0f, g.accumulate ? 1.0f : 0.0f, g.bias ? &bias : nullptr); };
    for (int w = 0; w < 2; ++w) call();
    std::vector<double> ms;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) call();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters);
    }
    const double flop = 2.0 * double(g.m) * double(g.n) * double(g.k), med = median(ms);
    const auto [lo, hi] = std::minmax_element(ms.begin(), ms.end());
    std::printf("| %s | %lld x %lld x %lld | %.3f | %.1f | %.1f-%.1f |\n", g.name, (long long)g.m, (long long)g.n,
                (long long)g.k, med, flop / med / 1e6, flop / *hi / 1e6, flop / *lo / 1e6);
    std::fflush(stdout);
    total_ms += med;
    total_flop += flop;
  }
  std::printf("all: %.3f ms, %.1f GFLOP/s\n", total_ms, total_flop / total_ms / 1e6);
  return 0;
}
