#pragma once
// Causal attention of one (batch, head) with AVX-512 (see attention_avx512.cpp), on fp32 rows
// that attention.cpp has gathered: q, k, v, o, dO, dq, dk, dv are [T, D] contiguous. x86-64
// only; call only when cpu_isa() is CpuIsa::kAvx512 (kernels/cpu_isa.h).
#include <cstdint>

#include "kernels/cpu/attention_head.h"

namespace mt::cpu::avx512 {

using cpu::AttentionHead;

// Floats of scratch the two functions need (64-byte aligned).
int64_t attention_forward_scratch(int64_t T, int64_t D);
int64_t attention_backward_scratch(int64_t T, int64_t D);

// o = softmax(scale q k^T + causal mask) (with dropout) v; lse[i] = log-sum-exp of row i.
void attention_forward(const AttentionHead& h, const float* q, const float* k, const float* v, float* o, float* lse,
                       float* scratch);
// dq, dk, dv (written, not accumulated) from dO and the forward's o and lse.
void attention_backward(const AttentionHead& h, const float* q, const float* k, const float* v, const float* o,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv, float* scratch);

}  // namespace mt::cpu::avx512
