#pragma once
// One row of softmax cross-entropy on fp32 logits with AVX-512, for cross_entropy.cpp. x86-64
// only; call only when sgemm_avx512_available() (blas.h).
#include <cstdint>

namespace mt::cpu::avx512 {

// Returns lse = log sum_{v < vocab} e^(x_v). With g, also writes g[v] = w (e^(x_v - lse) -
// [v == target]) for v < vocab; g may be x.
float xent_row(const float* x, int64_t vocab, int64_t target, float w, float* g);

}  // namespace mt::cpu::avx512
