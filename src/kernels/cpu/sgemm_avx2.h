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

#include "kernels/cpu/sgemm_entry_points.inc"

}  // namespace mt::cpu::avx2
