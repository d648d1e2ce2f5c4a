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

#include "kernels/cpu/sgemm_entry_points.inc"

}  // namespace mt::cpu::avx512
