// GEMM throughput at the shapes one training step of our GPT models runs, through mt::gemm
// exactly as the model calls it (bf16 operands, fp32 accumulation; bf16 activations out with
// the bias epilogue; weight gradients accumulated into fp32 main grads with beta = 1), next to
// a large square 8192^3 bf16 GEMM as what the device can do. Per model (vocabulary 50304):
//   124M: 16 x 1024 tokens, hidden 768;  350M: 16 x 1024, 1024;  1.3B: 8 x 2048, 2048
// the twelve GEMMs of one transformer layer (qkv, attention projection, fc1, fc2; forward, dgrad,
// wgrad), the three of the logits, and the MLP's GeLU with and without the cuBLASLt epilogue
// fusion (gemm.h's gemm_bias_gelu / gemm_dgelu), the weight gradients with and without the bias
// gradient in the GEMM epilogue (gemm_wgrad_bgrad); TFLOP/s count the GEMM's FLOPs only. The
// summary line adds up one step's GEMM time: layers x layer GEMMs + logits.
// Times are CUDA-event averages over back-to-back calls after warm-up (plan building excluded).
//
// Last, per model, the library floor: one training step's GEMMs and cuDNN attention calls (and
// no other kernel), queued in the model's order and repeated for about two seconds, so the GPU
// runs them at the clock its power cap allows, as in training. No trainer built on these
// kernels can run a step faster than that; the line prints it as a tokens/s ceiling.
//
//   build/gemm_bench [--quick] [--model 124M|350M|1.3B]...   (default: all three)
//   --quick: the 124M model only, 5 timed calls per GEMM instead of 20.
#include <cstdlib>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda/cuda_backend.h"
#include "core/cuda/cuda_check.h"
#include "cuda_timing.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

using namespace mt;

namespace {

struct Model {
  const char* name;
  int64_t tokens, hidden, layers, seq, heads;
};
constexpr Model kModels[] = {{"124M", 16 * 1024, 768, 12, 1024, 12},
                             {"350M", 16 * 1024, 1024, 24, 1024, 16},
                             {"1.3B", 8 * 2048, 2048, 24, 2048, 16}};
constexpr int64_t kVocab = 50304;

int g_iters = 20, g_warmup = 3;

// Builds the cuBLASLt plan (and autotunes it), warms clocks and caches first.
double time_ms(const std::function<void()>& fn) { return bench::ms_per_call(fn, g_warmup, g_iters); }

Tensor randn(const Shape& shape, DType dt, uint64_t seed, float std = 1.0f) {
  Tensor t = Tensor::empty(shape, dt, Device::cuda(0));
  fill_normal(t, std, seed, 1);
  return t;
}

// One GEMM call of the model: C[m, n] = op(A) op(B) (+ bias) (+ C when accumulating).
struct Gemm {
  const char* name;
  int64_t m, n, k;
  bool ta, tb;
  bool bias;        // forward of a linear layer: bf16 bias epilogue
  bool accumulate;  // weight gradient: fp32 C, beta = 1
};

double flops(int64_t m, int64_t n, int64_t k) { return 2.0 * double(m) * double(n) * double(k); }

double time_gemm(const Gemm& g) {
  Tensor a = randn(g.ta ? Shape{g.k, g.m} : Shape{g.m, g.k}, DType::BF16, 1);
  Tensor b = randn(g.tb ? Shape{g.n, g.k} : Shape{g.k, g.n}, DType::BF16, 2, 0.02f);
  Tensor c = Tensor::empty({g.m, g.n}, g.accumulate ? DType::F32 : DType::BF16, Device::cuda(0));
  fill(c, 0.0f);
  Tensor bias = randn({g.n}, DType::BF16, 3);
  return time_ms([&] { gemm(a, g.ta, b, g.tb, c, 1.0f, g.accumulate ? 1.0f : 0.0f, g.bias ? &bias : nullptr); });
}

struct Printer {
  double square_tflops = 0;
  void header() const {
    std::printf("| model | GEMM | m x n x k | ms | TFLOP/s | %% of square |\n|---|---|---|---:|---:|---:|\n");
  }
  void row(const char* model, const std::string& name, int64_t m, int64_t n, int64_t k, double ms) const {
    const double tf = flops(m, n, k) / ms / 1e9;
    std::printf("| %s | %s | %lld x %lld x %lld | %.3f | %.1f | %.0f%% |\n", model, name.c_str(), (long long)m,
                (long long)n, (long long)k, ms, tf, 100.0 * tf / square_tflops);
    std::fflush(stdout);
  }
};

// ms per step of the library floor (see the top of the file).
double library_floor_ms(const Model& md, const std::vector<Gemm>& layer, const std::vector<Gemm>& logits) {
  struct Operands {
    Tensor a, b, c;
    bool ta, tb, accumulate;
  };
  auto make = [](const Gemm& g) {
    Tensor c = Tensor::empty({g.m, g.n}, g.accumulate ? DType::F32 : DType::BF16, Device::cuda(0));
    fill(c, 0.0f);
    return Operands{randn(g.ta ? Shape{g.k, g.m} : Shape{g.m, g.k}, DType::BF16, 1),
                    randn(g.tb ? Shape{g.n, g.k} : Shape{g.k, g.n}, DType::BF16, 2, 0.02f), c, g.ta, g.tb,
                    g.accumulate};
  };
  std::vector<Operands> lo, ho;
  for (const Gemm& g : layer) lo.push_back(make(g));
  for (const Gemm& g : logits) ho.push_back(make(g));
  const int64_t B = md.tokens / md.seq, H = md.heads, D = md.hidden / md.heads;
  const Device dev = Device::cuda(0);
  Tensor qkv = randn({B, md.seq, H, 3, D}, DType::BF16, 3), dout = randn({B, md.seq, H, D}, DType::BF16, 4);
  Tensor out = Tensor::empty({B, md.seq, H, D}, DType::BF16, dev), lse = Tensor::empty({B, H, md.seq}, DType::F32, dev);
  Tensor dqkv = Tensor::empty({B, md.seq, H, 3, D}, DType::BF16, dev);
  const AttentionConfig cfg{int(H), int(D), 0.0f, 0, 0};
  auto run = [](const Operands& o) { gemm(o.a, o.ta, o.b, o.tb, o.c, 1.0f, o.accumulate ? 1.0f : 0.0f); };
  // Model order: forward (qkv, attention, proj, fc1, fc2 per layer; logits), then backward in
  // reverse (logits; per layer fc2, fc1, proj dgrad/wgrad, attention, qkv).
  auto step = [&] {
    for (int64_t l = 0; l < md.layers; ++l) {
      run(lo[0]);
      attention_forward(qkv, out, lse, cfg);
      run(lo[3]), run(lo[6]), run(lo[9]);
    }
    for (const Operands& o : ho) run(o);
    for (int64_t l = 0; l < md.layers; ++l) {
      run(lo[10]), run(lo[11]), run(lo[7]), run(lo[8]), run(lo[4]), run(lo[5]);
      attention_backward(dout, qkv, out, lse, dqkv, cfg);
      run(lo[1]), run(lo[2]);
    }
  };
  const double one = time_ms(step);
  // ~0.5 s to reach the power cap, then ~2 s timed.
  return bench::ms_per_call(step, std::max(1, int(500.0 / one)), std::max(3, int(2000.0 / one)));
}

void bench_model(const Model& md, const Printer& p) {
  const int64_t N = md.tokens, h = md.hidden, F = 4 * h, V = kVocab;
  const std::vector<Gemm> layer = {
      {"qkv fwd", N, 3 * h, h, false, true, true, false},    {"qkv dgrad", N, h, 3 * h, false, false, false, false},
      {"qkv wgrad", 3 * h, h, N, true, false, false, true},  {"proj fwd", N, h, h, false, true, true, false},
      {"proj dgrad", N, h, h, false, false, false, false},   {"proj wgrad", h, h, N, true, false, false, true},
      {"fc1 fwd", N, F, h, false, true, true, false},        {"fc1 dgrad", N, h, F, false, false, false, false},
      {"fc1 wgrad", F, h, N, true, false, false, true},      {"fc2 fwd", N, h, F, false, true, true, false},
      {"fc2 dgrad", N, F, h, false, false, false, false},    {"fc2 wgrad", h, F, N, true, false, false, true},
  };
  const std::vector<Gemm> logits = {
      {"logits fwd", N, V, h, false, true, false, false},
      {"logits dgrad", N, h, V, false, false, false, false},
      {"logits wgrad", V, h, N, true, false, false, true},
  };
  double layer_ms = 0, layer_flops = 0, logits_ms = 0, logits_flops = 0;
  for (const Gemm& g : layer) {
    const double ms = time_gemm(g);
    p.row(md.name, g.name, g.m, g.n, g.k, ms);
    layer_ms += ms;
    layer_flops += flops(g.m, g.n, g.k);
  }
  for (const Gemm& g : logits) {
    const double ms = time_gemm(g);
    p.row(md.name, g.name, g.m, g.n, g.k, ms);
    logits_ms += ms;
    logits_flops += flops(g.m, g.n, g.k);
  }

  // The MLP's GeLU: fc1 forward + gelu, and fc2 dgrad + gelu' + fc1's bias grad, separate ops
  // against the fused epilogues.
  {
    const Device dev = Device::cuda(0);
    Tensor x = randn({N, h}, DType::BF16, 4), w1 = randn({F, h}, DType::BF16, 5, 0.02f);
    Tensor b1 = randn({F}, DType::BF16, 6, 0.02f), w2 = randn({h, F}, DType::BF16, 7, 0.02f);
    Tensor dy = randn({N, h}, DType::BF16, 8);
    Tensor pre = Tensor::empty({N, F}, DType::BF16, dev), act = Tensor::empty({N, F}, DType::BF16, dev);
    Tensor dpre = Tensor::empty({N, F}, DType::BF16, dev), db1 = Tensor::empty({F}, DType::F32, dev);
    fill(db1, 0.0f);
    const double fwd_sep = time_ms([&] {
      gemm(x, false, w1, true, pre, 1.0f, 0.0f, &b1);
      gelu_forward(pre, act);
    });
    bool fused_fwd = false, fused_bwd = false;
    const double fwd_fused = time_ms([&] { fused_fwd = gemm_bias_gelu(x, false, w1, true, &b1, pre, act); });
    const double bwd_sep = time_ms([&] {
      gemm(dy, false, w2, false, dpre);
      gelu_backward(dpre, pre, dpre);
      bias_grad_accumulate(dpre, db1);
    });
    // The backward epilogues are opt-in: time them all the same (MT_GEMM_FUSE_DGELU, gemm.cu).
    bool dgelu_bwd = false;
    setenv("MT_GEMM_FUSE_DGELU", "1", 1);
    const double bwd_dgelu = time_ms([&] {
      dgelu_bwd = gemm_dgelu(dy, false, w2, false, pre, dpre, &db1);  // DGELU, then bias_grad_accumulate
    });
    setenv("MT_GEMM_FUSE_DGELU", "bgrad", 1);
    const double bwd_fused = time_ms([&] { fused_bwd = gemm_dgelu(dy, false, w2, false, pre, dpre, &db1); });
    unsetenv("MT_GEMM_FUSE_DGELU");
    p.row(md.name, "fc1 fwd + bias + GeLU, separate", N, F, h, fwd_sep);
    p.row(md.name, fused_fwd ? "fc1 fwd + bias + GeLU, fused" : "fc1 fwd + bias + GeLU, fused (NOT FUSED)", N, F, h,
          fwd_fused);
    p.row(md.name, "fc2 dgrad + GeLU' + fc1 db, separate", N, F, h, bwd_sep);
    p.row(md.name,
          dgelu_bwd ? "fc2 dgrad + GeLU' (DGELU epilogue) + fc1 db separate"
                    : "fc2 dgrad + GeLU' (DGELU epilogue) + fc1 db separate (NOT FUSED)",
          N, F, h, bwd_dgelu);
    p.row(md.name,
          fused_bwd ? "fc2 dgrad + GeLU' + fc1 db (DGELU_BGRAD)" : "fc2 dgrad + GeLU' + fc1 db (DGELU_BGRAD, NOT FUSED)",
          N, F, h, bwd_fused);
    std::printf(
        "| %s | **GeLU fusion saves per step: forward (on) / backward DGELU, DGELU_BGRAD (opt-in)** | %lld layers "
        "| %.3f / %.3f, %.3f | | |\n",
        md.name, (long long)md.layers, md.layers * (fwd_sep - fwd_fused), md.layers * (bwd_sep - bwd_dgelu),
        md.layers * (bwd_sep - bwd_fused));
  }

  // Weight gradient + bias gradient (qkv, proj and fc2; fc1's bias grad is in fc2's dgrad above):
  // wgrad then bias_grad_accumulate against the BGRADB epilogue (gemm_wgrad_bgrad).
  {
    double saved_ms = 0;
    for (auto [name, out, in] : {std::tuple<const char*, int64_t, int64_t>{"qkv", 3 * h, h}, {"proj", h, h},
                                 {"fc2", h, F}}) {
      const Device dev = Device::cuda(0);
      Tensor dy = randn({N, out}, DType::BF16, 9), x = randn({N, in}, DType::BF16, 10);
      Tensor dw = Tensor::empty({out, in}, DType::F32, dev), db = Tensor::empty({out}, DType::F32, dev);
      fill(dw, 0.0f);
      fill(db, 0.0f);
      const double sep = time_ms([&] {
        gemm(dy, true, x, false, dw, 1.0f, 1.0f);
        bias_grad_accumulate(dy, db);
      });
      bool fused = false;
      setenv("MT_GEMM_FUSE_BGRAD", "1", 1);  // the epilogue is opt-in: time it all the same
      const double fus = time_ms([&] { fused = gemm_wgrad_bgrad(dy, x, dw, db); });
      unsetenv("MT_GEMM_FUSE_BGRAD");
      p.row(md.name, std::string(name) + " wgrad + bias grad, separate", out, in, N, sep);
      p.row(md.name, std::string(name) + " wgrad + bias grad, fused" + (fused ? "" : " (NOT FUSED)"), out, in, N, fus);
      saved_ms += md.layers * (sep - fus);
    }
    std::printf("| %s | **bias-grad fusion (opt-in) saves per step** | %lld layers | %.3f | | |\n", md.name,
                (long long)md.layers, saved_ms);
  }

  const double step_ms = md.layers * layer_ms + logits_ms;
  const double step_flops = md.layers * layer_flops + logits_flops;
  std::printf("| %s | **one layer's 12 GEMMs** | | %.3f | %.1f | %.0f%% |\n", md.name, layer_ms,
              layer_flops / layer_ms / 1e9, 100.0 * layer_flops / layer_ms / 1e9 / p.square_tflops);
  std::printf("| %s | **step: %lld layers + logits** | | %.3f | %.1f | %.0f%% |\n", md.name, (long long)md.layers,
              step_ms, step_flops / step_ms / 1e9, 100.0 * step_flops / step_ms / 1e9 / p.square_tflops);
  std::fflush(stdout);
  const double floor_ms = library_floor_ms(md, layer, logits);
  std::printf("| %s | **library floor: the step's GEMMs + cuDNN attention only, back to back for ~2 s (%.0f "
              "tokens/s at most)** | | %.3f | | |\n",
              md.name, double(md.tokens) / floor_ms * 1e3, floor_ms);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> wanted;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    bool known = false;
    for (const Model& md : kModels) known = known || (i + 1 < argc && argv[i + 1] == std::string(md.name));
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--model") == 0 && known) {
      wanted.push_back(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: gemm_bench [--quick] [--model 124M|350M|1.3B]...\n");
      return 2;
    }
  }
  if (quick) {
    g_iters = 5;
    g_warmup = 1;
    if (wanted.empty()) wanted.push_back("124M");
  }
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "gemm_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  MT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("gemm_bench on %s: bf16 operands, fp32 accumulation; %d warm-up + %d timed calls per GEMM\n\n",
              prop.name, g_warmup, g_iters);

  Printer p;
  {
    const int64_t s = 8192;
    Tensor a = randn({s, s}, DType::BF16, 11), b = randn({s, s}, DType::BF16, 12, 0.02f);
    Tensor c = Tensor::empty({s, s}, DType::BF16, Device::cuda(0));
    const double ms = time_ms([&] { gemm(a, false, b, true, c); });
    p.square_tflops = flops(s, s, s) / ms / 1e9;
    p.header();
    p.row("device", "square bf16 (reference)", s, s, s, ms);
  }
  for (const Model& md : kModels) {
    bool run = wanted.empty();
    for (const std::string& w : wanted) run = run || w == md.name;
    if (run) bench_model(md, p);
  }
  MT_CUDA_CHECK(cudaDeviceSynchronize());
  return 0;
}
