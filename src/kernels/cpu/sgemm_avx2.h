#pragma once
// The AVX2 + FMA sgemm (sgemm_avx2.cpp): sgemm_avx512.h's design and entry points in 8 lanes,
// with a 6 x 16 register tile. x86-64 only; call only when cpu_isa() is CpuIsa::kAvx2
// (kernels/cpu_isa.h).
//
// Packed forms: k is cut into blocks of kc <= kKC rows (a function of k only). For the block
// starting at row pc, op(A) [m, k] is stored at pa + pc * ceil(m / 6) * 8 as 6-row panels of
// kc x 8 floats; op(B) [k, n] at pb + pc * ceil(n / 16) * 16 as 16-column strips of kc x 16.
// Buffers must be 32-byte aligned.
#include <cstdint>

namespace mt::cpu::avx2 {

constexpr int64_t kRows = 6;    // a tile of C starts at a row that is a multiple of this
constexpr int64_t kCols = 16;   // and at a column that is a multiple of this
constexpr int64_t kKC = 256;    // the deepest k block: a kc x 16 strip of B is 16 KiB (L1)

int64_t packed_a_floats(int64_t m, int64_t k);
int64_t packed_b_floats(int64_t k, int64_t n);

// As sgemm_avx512.h's functions of the same names, for these packed forms.
void pack_a(bool trans_a, const float* a, int64_t lda, int64_t m, int64_t k, int64_t i0, int64_t rows, float* pa,
            float* row_sums = nullptr);
void pack_b(bool trans_b, const float* b, int64_t ldb, int64_t k, int64_t n, int64_t j0, int64_t cols, float* pb);
void gemm_packed(int64_t m, int64_t n, int64_t k, float alpha, const float* pa, const float* pb, float beta, float* c,
                 int64_t ldc, int64_t i0, int64_t rows, int64_t j0, int64_t cols);

// One k block at a time (attention): panels + q * kc * 8 is panel q = row / kRows, strips + s *
// kc * kCols strip s = col / kCols.
int64_t panel_floats(int64_t rows, int64_t kc);
int64_t strip_floats(int64_t kc, int64_t cols);
void pack_panels(bool trans_a, const float* a, int64_t lda, int64_t rows, int64_t kc, float* dst);
void pack_strips(bool trans_b, const float* b, int64_t ldb, int64_t kc, int64_t cols, float* dst);
void gemm_block(int64_t kc, const float* panels, int64_t rows, const float* strips, int64_t cols, float alpha,
                float beta, float* c, int64_t ldc);

}  // namespace mt::cpu::avx2
