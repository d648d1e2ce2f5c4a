// LayerNorm kernel bandwidth on one GPU at the GPT models' widths (16,384 tokens of hidden size
// 768 / 1024 / 2048, bf16 activations and weights, fp32 statistics and weight gradients):
// forward, residual-add forward, backward and backward with the residual gradient added, as
// milliseconds per call and the DRAM bytes they must move (one read of each input, one write of
// each output) over that time. Times are CUDA-event averages of 50 calls after 5 warm-up calls.
//
//   build/layernorm_bench
#include <cuda_runtime.h>

#include <cstdio>
#include <functional>

#include "core/cuda/cuda_backend.h"
#include "core/cuda/cuda_check.h"
#include "cuda_timing.h"
#include "kernels/elementwise.h"
#include "kernels/layernorm.h"

using namespace mt;

namespace {

double time_ms(const std::function<void()>& fn) { return bench::ms_per_call(fn, 5, 50); }

}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "layernorm_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  MT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("layernorm_bench on %s: bf16, 16384 rows\n\n| C | op | ms | GB moved | TB/s |\n|---|---|---:|---:|---:|\n",
              prop.name);
  const Device dev = Device::cuda(0);
  const int64_t N = 16384;
  for (int64_t C : {768, 1024, 2048}) {
    auto t = [&](uint64_t seed) {
      Tensor x = Tensor::empty({N, C}, DType::BF16, dev);
      fill_normal(x, 1.0f, seed, 1);
      return x;
    };
    Tensor x = t(1), r = t(2), dy = t(3), dres = t(4), y = t(5), sum = t(6), dx = t(7);
    Tensor w = Tensor::empty({C}, DType::BF16, dev), b = Tensor::empty({C}, DType::BF16, dev);
    fill(w, 1.0f);
    fill(b, 0.0f);
    Tensor mean = Tensor::empty({N}, DType::F32, dev), rstd = Tensor::empty({N}, DType::F32, dev);
    Tensor dw = Tensor::zeros({C}, DType::F32, dev), db = Tensor::zeros({C}, DType::F32, dev);
    const double a = double(N) * double(C) * 2.0;  // bytes of one activation
    auto row = [&](const char* op, double ms, double tensors) {
      std::printf("| %lld | %s | %.4f | %.3f | %.2f |\n", (long long)C, op, ms, tensors * a / 1e9,
                  tensors * a / (ms * 1e-3) / 1e12);
    };
    row("forward (x -> y)", time_ms([&] { layernorm_forward(x, w, b, 1e-5f, y, mean, rstd); }), 2);
    row("add + forward (x, r -> sum, y)",
        time_ms([&] { add_layernorm_forward(x, r, w, b, 1e-5f, sum, y, mean, rstd); }), 4);
    row("backward (dy, x -> dx)", time_ms([&] { layernorm_backward(dy, x, w, mean, rstd, dx, dw, db); }), 3);
    row("backward + dres (dy, x, dres -> dx)",
        time_ms([&] { layernorm_backward_add(dy, x, w, mean, rstd, dres, dx, dw, db); }), 4);
  }
  return 0;
}
