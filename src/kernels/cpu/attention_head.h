#pragma once
// One (batch, head) of causal attention as the SIMD block loops see it (attention_avx512.h,
// attention_avx2.h): its length, width, scale and dropout.
#include <cstdint>

namespace mt::cpu {

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

}  // namespace mt::cpu
