#pragma once
// One row of softmax cross-entropy on fp32 logits with AVX2 + FMA, for cross_entropy.cpp: the
// entry point of cross_entropy_avx512.h in 8 lanes. x86-64 only; call only when cpu_isa() is
// CpuIsa::kAvx2.
#include <cstdint>

namespace mt::cpu::avx2 {

// Returns lse = log sum_{v < vocab} e^(x_v). With g, also writes g[v] = w (e^(x_v - lse) -
// [v == target]) for v < vocab; g may be x.
float xent_row(const float* x, int64_t vocab, int64_t target, float w, float* g);

}  // namespace mt::cpu::avx2
