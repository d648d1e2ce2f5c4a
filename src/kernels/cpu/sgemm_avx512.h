#pragma once
// The AVX-512 sgemm (sgemm_avx512.cpp) in pieces, so that a multi-threaded caller packs each
// operand once, in parallel, and shares it between the threads that compute tiles of C.
// x86-64 only; call only when sgemm_avx512_available() (blas.h).
//
// Packed forms: k is cut into blocks of kc <= kKC rows (a function of k only). For the block
// starting at row pc, op(A) [m, k] is stored at pa + pc * ceil(m / 14) * 16 as 14-row panels of
// kc x 16 floats; op(B) [k, n] at pb + pc * ceil(n / 32) * 32 as 32-column strips of kc x 32.
// Buffers must be 64-byte aligned.
#include <cstdint>

namespace mt::cpu::avx512 {

constexpr int64_t kRows = 14;   // a tile of C starts at a row that is a multiple of this
constexpr int64_t kCols = 32;   // and at a column that is a multiple of this
constexpr int64_t kKC = 256;    // the deepest k block: a kc x 32 strip of B is 32 KiB (L1)

int64_t packed_a_floats(int64_t m, int64_t k);
int64_t packed_b_floats(int64_t k, int64_t n);

// Packs rows i0 .. i0 + rows of op(A) (i0 a multiple of kRows) into pa, the packed form of all
// of op(A); op(A) = A^T when trans_a, A row-major with leading dimension lda. With row_sums
// (trans_a only): row_sums[i] += op(A)[i, p] for p = 0, 1, .. k - 1 in order, for those rows
// (for a linear layer's bias gradient: the column sums of dy, read while packing dy^T).
void pack_a(bool trans_a, const float* a, int64_t lda, int64_t m, int64_t k, int64_t i0, int64_t rows, float* pa,
            float* row_sums = nullptr);
// Packs columns j0 .. j0 + cols of op(B) (j0 a multiple of kCols) into pb.
void pack_b(bool trans_b, const float* b, int64_t ldb, int64_t k, int64_t n, int64_t j0, int64_t cols, float* pb);

// C[i, j] = alpha op(A) op(B) + beta C for i0 <= i < i0 + rows, j0 <= j < j0 + cols (i0, j0
// multiples of kRows, kCols), from the packed forms; c points at C[0, 0]. beta = 0: C not read.
void gemm_packed(int64_t m, int64_t n, int64_t k, float alpha, const float* pa, const float* pb, float beta, float* c,
                 int64_t ldc, int64_t i0, int64_t rows, int64_t j0, int64_t cols);

// One k block at a time, for callers that keep packed operands across many small products
// (attention): op(A) rows 0 .. rows as panels of depth kc (panel_floats), op(B) columns 0 ..
// cols as strips of depth kc (strip_floats); any kc. Panels and strips of a sub-block start at
// panel q = row / kRows, strip s = col / kCols: panels + q * kc * 16, strips + s * kc * kCols.
int64_t panel_floats(int64_t rows, int64_t kc);
int64_t strip_floats(int64_t kc, int64_t cols);
void pack_panels(bool trans_a, const float* a, int64_t lda, int64_t rows, int64_t kc, float* dst);
void pack_strips(bool trans_b, const float* b, int64_t ldb, int64_t kc, int64_t cols, float* dst);
// C[rows, cols] = alpha panels strips + beta C (beta = 0: C not read), the same arithmetic per
// element as gemm_packed with k = kc.
void gemm_block(int64_t kc, const float* panels, int64_t rows, const float* strips, int64_t cols, float alpha,
                float beta, float* c, int64_t ldc);

}  // namespace mt::cpu::avx512
