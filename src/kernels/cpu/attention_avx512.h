#pragma once
// Causal attention of one (batch, head) with AVX-512 (see attention_avx512.cpp), on fp32 rows
// that attention.cpp has gathered: q, k, v, o, dO, dq, dk, dv are [T, D] contiguous. x86-64
// only; call only when sgemm_avx512_available() (blas.h).
#include <cstdint>

namespace mt::cpu::avx512 {

struct AttentionHead {
  int64_t T = 0, D = 0;
  float scale = 1.0f;
  // Dropout, or null: fills zt[(j - j0) * ldz + (i - i0)] with the factor (0 or 1/(1-p)) of query
  // i and key j, for i0 <= i < i0 + rows, j0 <= j < j0 + cols.
  using DropoutFn = void (*)(const void* ctx, int64_t i0, int64_t rows, int64_t j0, int64_t cols, float* zt,
                             int64_t ldz);
  DropoutFn dropout = nullptr;
  const void* dropout_ctx = nullptr;
};

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
