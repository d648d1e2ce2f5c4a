// CPU time of the per-head attention kernels (attention_avx512.h, attention_avx2.h) and the GeLU
// kernels (gelu_avx512.h, gelu_avx2.h) at the shapes of bench/gpt_cpu_vs_pytorch.py's model: one
// head T = 256, D = 64 (hidden 384 / 6 heads); GeLU over 32 rows of 4 x 384, row by row, as the
// fused GEMM epilogue (gemm_tiles.cpp) calls it on a tile of C still in cache. Each
// kernel is called directly, single-threaded, and timed in thread CPU time (not wall time: the
// machine may be shared), rounds of the paths interleaved, median of --repeats rounds of --iters
// calls. --hash prints an FNV-1a hash of every kernel's output bits over a set of shapes (odd
// lengths, other widths, dropout) so a change can be checked bit for bit against the old code.
//
//   build-cpu/attention_cpu_bench [--iters N] [--repeats R] [--path avx512|avx2] [--hash]
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/attention_avx2.h"
#include "kernels/cpu/attention_avx512.h"
#include "kernels/cpu/gelu_avx2.h"
#include "kernels/cpu/gelu_avx512.h"

using namespace mt::cpu;

namespace {

struct Path {
  const char* name;
  int64_t (*fwd_scratch)(int64_t, int64_t);
  int64_t (*bwd_scratch)(int64_t, int64_t);
  void (*fwd)(const AttentionHead&, const float*, const float*, const float*, float*, float*, float*);
  void (*bwd)(const AttentionHead&, const float*, const float*, const float*, const float*, const float*,
              const float*, float*, float*, float*, float*);
  void (*gelu)(const float*, float*, int64_t);
  void (*dgelu)(const float*, const float*, float*, int64_t);
};
const Path kPaths[] = {
    {"avx512", &avx512::attention_forward_scratch, &avx512::attention_backward_scratch, &avx512::attention_forward,
     &avx512::attention_backward, &avx512::gelu_forward, &avx512::gelu_backward},
    {"avx2", &avx2::attention_forward_scratch, &avx2::attention_backward_scratch, &avx2::attention_forward,
     &avx2::attention_backward, &avx2::gelu_forward, &avx2::gelu_backward},
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float range) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t s = seed * 2654435761u + 1;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = range * float(int32_t(s >> 8) - (1 << 23)) / float(1 << 23);
  }
  return v;
}

float* aligned_floats(int64_t n) {
  return static_cast<float*>(std::aligned_alloc(64, size_t((n + 15) / 16 * 16) * sizeof(float)));
}

// A fixed dropout pattern (p = 1/4, factor 4/3) from the coordinates alone.
void test_dropout(const void*, int64_t i0, int64_t rows, int64_t j0, int64_t cols, float* zt, int64_t ldz) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t h = uint32_t((i0 + r) * 2654435761u) ^ uint32_t((j0 + c) * 40503u);
      zt[c * ldz + r] = (h >> 7) % 4 == 0 ? 0.0f : 4.0f / 3.0f;
    }
}

// One head's inputs, outputs and scratch.
struct Head {
  AttentionHead h;
  std::vector<float> q, k, v, dout, o, lse, dq, dk, dv;
  float *fs, *bs;
  Head(const Path& p, int64_t T, int64_t D, bool dropout) {
    h.T = T;
    h.D = D;
    h.scale = 1.0f / std::sqrt(float(D));
    if (dropout) h.dropout = &test_dropout;
    q = random_floats(T * D, 1, 2.0f);
    k = random_floats(T * D, 2, 2.0f);
    v = random_floats(T * D, 3, 1.0f);
    dout = random_floats(T * D, 4, 1.0f);
    o.resize(size_t(T * D));
    lse.resize(size_t(T));
    dq.resize(size_t(T * D));
    dk.resize(size_t(T * D));
    dv.resize(size_t(T * D));
    fs = aligned_floats(p.fwd_scratch(T, D));
    bs = aligned_floats(p.bwd_scratch(T, D));
  }
  ~Head() {
    std::free(fs);
    std::free(bs);
  }
  void forward(const Path& p) { p.fwd(h, q.data(), k.data(), v.data(), o.data(), lse.data(), fs); }
  void backward(const Path& p) {
    p.bwd(h, q.data(), k.data(), v.data(), o.data(), dout.data(), lse.data(), dq.data(), dk.data(), dv.data(), bs);
  }
};

uint64_t fnv(uint64_t h, const std::vector<float>& v) {
  for (float x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    for (int b = 0; b < 4; ++b) h = (h ^ ((u >> (8 * b)) & 0xFF)) * 1099511628211ull;
  }
  return h;
}

double cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e3 + double(t.tv_nsec) * 1e-6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void print_hashes(const Path& p) {
  const int64_t shapes[][2] = {{256, 64}, {64, 64}, {100, 64}, {257, 64}, {200, 32}, {130, 80}, {7, 24}, {33, 16}};
  for (const auto& s : shapes)
    for (int drop = 0; drop < 2; ++drop) {
      Head hd(p, s[0], s[1], drop);
      hd.forward(p);
      hd.backward(p);
      const uint64_t f = fnv(fnv(14695981039346656037ull, hd.o), hd.lse);
      const uint64_t b = fnv(fnv(fnv(14695981039346656037ull, hd.dq), hd.dk), hd.dv);
      std::printf("%s attention T %lld D %lld dropout %d: fwd %016llx bwd %016llx\n", p.name, (long long)s[0],
                  (long long)s[1], drop, (unsigned long long)f, (unsigned long long)b);
    }
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(13), int64_t(4096), int64_t(4103)}) {
    std::vector<float> x = random_floats(n, 5, 12.0f), dy = random_floats(n, 6, 1.0f), y(static_cast<size_t>(n)), dx(static_cast<size_t>(n));
    x[0] = 100.0f;
    if (n > 1) x[1] = -100.0f;
    p.gelu(x.data(), y.data(), n);
    p.dgelu(dy.data(), x.data(), dx.data(), n);
    std::printf("%s gelu n %lld: fwd %016llx bwd %016llx\n", p.name, (long long)n,
                (unsigned long long)fnv(14695981039346656037ull, y),
                (unsigned long long)fnv(14695981039346656037ull, dx));
  }
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 50, repeats = 15;
  const char* only = nullptr;
  bool hash = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--path") && i + 1 < argc) only = argv[++i];
    else if (!std::strcmp(argv[i], "--hash")) hash = true;
    else {
      std::fprintf(stderr, "usage: attention_cpu_bench [--iters N] [--repeats R] [--path avx512|avx2] [--hash]\n");
      return 2;
    }
  }
  std::vector<const Path*> paths;
  for (const Path& p : kPaths)
    if (!only || !std::strcmp(only, p.name)) paths.push_back(&p);
  if (hash) {
    for (const Path* p : paths) print_hashes(*p);
    return 0;
  }
  // GeLU as the fused GEMM epilogue calls it: row by row over a block of C that is still in cache.
  constexpr int64_t T = 256, D = 64, kGeluRows = 32, kGeluCols = 1536, kGeluN = kGeluRows * kGeluCols;
  const std::vector<float> gx = random_floats(kGeluN, 7, 4.0f), gdy = random_floats(kGeluN, 8, 1.0f);
  std::vector<float> gy(static_cast<size_t>(kGeluN)), gdx(static_cast<size_t>(kGeluN));
  struct Timing {
    const Path* p;
    Head* head;
    std::vector<double> fwd, bwd, gelu, dgelu;
  };
  std::vector<Timing> t;
  for (const Path* p : paths) t.push_back({p, new Head(*p, T, D, false), {}, {}, {}, {}});
  const int gelu_iters = iters;
  auto time = [](int n, auto&& call) {
    const double t0 = cpu_ms();
    for (int i = 0; i < n; ++i) call();
    return (cpu_ms() - t0) / n;
  };
  for (int r = -1; r < repeats; ++r)  // round -1 warms up
    for (Timing& x : t) {
      const Path& p = *x.p;
      const double f = time(iters, [&] { x.head->forward(p); });
      const double b = time(iters, [&] { x.head->backward(p); });
      const double g = time(gelu_iters, [&] {
        for (int64_t i = 0; i < kGeluN; i += kGeluCols) p.gelu(gx.data() + i, gy.data() + i, kGeluCols);
      });
      const double dg = time(gelu_iters, [&] {
        for (int64_t i = 0; i < kGeluN; i += kGeluCols) p.dgelu(gdy.data() + i, gx.data() + i, gdx.data() + i, kGeluCols);
      });
      if (r < 0) continue;
      x.fwd.push_back(f);
      x.bwd.push_back(b);
      x.gelu.push_back(g);
      x.dgelu.push_back(dg);
    }
  std::printf("thread CPU ms per call, median of %d rounds (min-max); attention one head T %lld D %lld, GeLU %lld rows of %lld\n",
              repeats, (long long)T, (long long)D, (long long)kGeluRows, (long long)kGeluCols);
  std::printf("| path | attention fwd | attention bwd | gelu fwd | gelu bwd |\n|---|---:|---:|---:|---:|\n");
  for (Timing& x : t) {
    auto cell = [](const std::vector<double>& v) {
      static char buf[4][64];
      static int at = 0;
      char* s = buf[at++ % 4];
      std::snprintf(s, 64, "%.4f (%.4f-%.4f)", median(v), *std::min_element(v.begin(), v.end()),
                    *std::max_element(v.begin(), v.end()));
      return s;
    };
    std::printf("| %s | %s | %s | %s | %s |\n", x.p->name, cell(x.fwd), cell(x.bwd), cell(x.gelu), cell(x.dgelu));
    delete x.head;
  }
  return 0;
}
