#pragma once
// Causal attention of one (batch, head) with AVX2 + FMA (attention_avx2.cpp): attention_avx512.h's
// entry points for the AVX2 path, same layouts. x86-64 only; call only when cpu_isa() is
// CpuIsa::kAvx2 (kernels/cpu_isa.h).
#include <cstdint>

#include "kernels/cpu/attention_head.h"

namespace mt::cpu::avx2 {

// Floats of scratch the two functions need (64-byte aligned).
int64_t attention_forward_scratch(int64_t T, int64_t D);
int64_t attention_backward_scratch(int64_t T, int64_t D);

// o = softmax(scale q k^T + causal mask) (with dropout) v; lse[i] = log-sum-exp of row i.
void attention_forward(const AttentionHead& h, const float* q, const float* k, const float* v, float* o, float* lse,
                       float* scratch);
// dq, dk, dv (written, not accumulated) from dO and the forward's o and lse.
void attention_backward(const AttentionHead& h, const float* q, const float* k, const float* v, const float* o,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv, float* scratch);

}  // namespace mt::cpu::avx2
