// Single-threaded fp32 GEMM with AVX-512: C[m, n] = alpha op(A) op(B) + beta C, row-major.
//
// The micro-kernel keeps a kMR x 32 block of C in 2 * kMR zmm accumulators; per step p it loads
// 32 floats of row p of op(B) (two zmm) and broadcasts kMR floats of column p of op(A), one FMA
// per accumulator: 28 FMAs per 16 loads, so the two FMA ports stay busy.
//
// Both operands are packed first, whatever their layout, into the order the kernel reads them:
// op(A) in kMR-row micro-panels (kc x kMR, p-major; 14 KiB, stays in L1 while the kernel walks
// a whole row of C) and op(B) in 32-column strips (kc x 32, p-major); the mc x kc block of A and
// the kc x nc block of B stay in L2. Reading the operands in place instead runs at half speed for the layouts here: rows of a
// kc-deep strip lie a leading dimension apart, each on its own 4 KiB page (TLB misses) and, for
// power-of-two dimensions, in one L1 set. Transposed operands are packed through 16 x 16
// in-register transposes, the others by plain copies.
//
// Loops, outer to inner: columns of C in kNC blocks, k in kc blocks (kc <= kKC, as equal as
// possible), rows in kMC blocks, rows in kMR micro-panels, columns in 32-wide strips. Every C element is
// summed in the same order, p = 0, 1, ... k - 1 within a kc block, blocks added to C in order:
// that order depends on k only, never on where the element sits in a tile or on m, n. So the
// caller's tiling (and hence the thread count) cannot change a bit of the result.
//
// This file is compiled with AVX-512 flags (src/kernels/CMakeLists.txt, x86-64 only) and must
// only be entered after sgemm_avx512_available() (blas.cpp, built for the baseline). It includes
// no C++ library templates and keeps everything but its entry point at internal linkage, so no
// AVX-512 instance of a shared inline function can be picked by the linker for code that runs
// on AVX2-only machines.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "kernels/cpu/blas.h"

namespace mt::cpu {
namespace {

constexpr int kMR = 14;        // rows of C per micro-kernel: 28 accumulators + 2 B registers
constexpr int kNR = 32;        // columns of C per micro-kernel: two zmm
constexpr int64_t kKC = 256;   // k per block: a kc x 32 strip of B is 32 KiB
constexpr int64_t kMC = 252;   // rows per block: a packed mc x kc block of A is 252 KiB (L2)
constexpr int64_t kNC = 512;   // columns per block: a packed kc x nc block of B is 512 KiB (L2)

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// Scratch for the packed operands, one per thread, grown on demand and freed at thread exit.
struct Scratch {
  float* p = nullptr;
  int64_t cap = 0;
  float* get(int64_t n) {
    if (n > cap) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, size_t((n + 15) / 16 * 16) * sizeof(float)));
      cap = n;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
thread_local Scratch a_scratch, b_scratch;

// GCC 12's unpack and shuffle intrinsics pass _mm512_undefined_ps() as the (unused) merge
// source, which -Wuninitialized reports at every inlined use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (both <= 16): one 16 x 16
// transpose in registers (within-lane unpacks, then lane shuffles); rows past `rows` read as 0.
void transpose16(const float* src, int64_t lds, int rows, int cols, float* dst, int64_t ldd) {
  const __mmask16 cm = lanes(cols), rm = lanes(rows);
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, src + i * lds) : _mm512_setzero_ps();
  // t[2i] holds, per 128-bit lane L, r[2i][4L], r[2i+1][4L], r[2i][4L+1], r[2i+1][4L+1].
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // r[4g + c], lane L: column 4L + c of rows 4g .. 4g + 3.
  for (int g = 0; g < 16; g += 4) {
    r[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
    r[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
    r[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    r[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
  }
  // Column 4L + c = lane L of r[c], r[4 + c], r[8 + c], r[12 + c]: a 4 x 4 transpose of lanes.
  for (int c = 0; c < 4; ++c) {
    const __m512 w0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), w1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
    const __m512 w2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
    const __m512 w3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
    const __m512 out[4] = {_mm512_shuffle_f32x4(w0, w2, 0x88), _mm512_shuffle_f32x4(w0, w2, 0xDD),
                           _mm512_shuffle_f32x4(w1, w3, 0x88), _mm512_shuffle_f32x4(w1, w3, 0xDD)};
    for (int l = 0; l < 4; ++l)
      if (4 * l + c < cols) _mm512_mask_storeu_ps(dst + (4 * l + c) * ldd, rm, out[l]);
  }
}

#pragma GCC diagnostic pop

// dst[p * ldd + j] = src[j * lds + p] for j < rows, p < cols: a rows x cols block transposed.
void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t j = 0; j < rows; j += 16)
    for (int64_t p = 0; p < cols; p += 16)
      transpose16(src + j * lds + p, lds, int(min64(16, rows - j)), int(min64(16, cols - p)), dst + p * ldd + j, ldd);
}

// op(A) rows i0 .. i0 + mc, columns pc .. pc + kc, as kMR-row micro-panels: panel q holds
// dst[q * kc * kMR + p * kMR + r] = op(A)[i0 + q kMR + r, pc + p]. With trans_a, row p of the
// block is contiguous in A and is read once, whole (row by row, one page at a time).
void pack_a(bool ta, const float* a, int64_t lda, int64_t i0, int64_t mc, int64_t pc, int64_t kc, float* dst) {
  if (ta) {
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = a + (pc + p) * lda + i0;
      for (int64_t q = 0; q * kMR < mc; ++q) {
        const int64_t mr = min64(kMR, mc - q * kMR);
        const __mmask16 lo = lanes(mr), hi = lanes(mr > 16 ? mr - 16 : 0);
        float* d = dst + q * kc * kMR + p * kMR;
        _mm512_mask_storeu_ps(d, lo, _mm512_maskz_loadu_ps(lo, src + q * kMR));
        if (hi) _mm512_mask_storeu_ps(d + 16, hi, _mm512_maskz_loadu_ps(hi, src + q * kMR + 16));
      }
    }
  } else {
    for (int64_t q = 0; q * kMR < mc; ++q)
      transpose(a + (i0 + q * kMR) * lda + pc, lda, min64(kMR, mc - q * kMR), kc, dst + q * kc * kMR, kMR);
  }
}

// op(B) rows pc .. pc + kc, columns jc .. jc + nc, as 32-column strips: strip s holds
// dst[s * kc * 32 + p * 32 + j] = op(B)[pc + p, jc + 32 s + j]; a last partial strip is padded
// with zeros, so the kernel always loads whole rows. Without trans_b, row p of the block is
// contiguous in B and is read once, whole.
void pack_b(bool tb, const float* b, int64_t ldb, int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* dst) {
  if (tb) {  // row j of B is column j of op(B)
    for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
      const int64_t nr = min64(kNR, nc - j0);
      float* d = dst + j0 * kc;
      if (nr < kNR)
        for (int64_t p = 0; p < kc; ++p) _mm512_storeu_ps(d + p * kNR + 16, _mm512_setzero_ps());
      transpose(b + (jc + j0) * ldb + pc, ldb, nr, kc, d, kNR);
      if (nr < 16)
        for (int64_t p = 0; p < kc; ++p) _mm512_mask_storeu_ps(d + p * kNR, __mmask16(~lanes(nr)), _mm512_setzero_ps());
    }
    return;
  }
  for (int64_t p = 0; p < kc; ++p) {
    const float* src = b + (pc + p) * ldb + jc;
    for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
      const int64_t nr = min64(kNR, nc - j0);
      const __mmask16 lo = lanes(nr), hi = lanes(nr > 16 ? nr - 16 : 0);
      float* d = dst + j0 * kc + p * kNR;
      _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(lo, src + j0));
      _mm512_storeu_ps(d + 16, _mm512_maskz_loadu_ps(hi, src + j0 + 16));
    }
  }
}

enum class Beta { kZero, kOne, kOther };

// C[0..MR, 0..nr) = alpha sum_p a[p * kMR + r] b[p * 32 + j] + beta C (nr <= 32; beta C read
// only for Beta::kOther, C read for Beta::kOne). Packed operands, so only C needs masks.
template <int MR, bool kFullN>
void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t nr, float alpha,
                  Beta beta_kind, float beta) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, a += kMR, b += kNR) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
  }
  // Explicit FMAs, and this file is built with -ffp-contract=off: had the compiler fused a
  // multiply and an add in some instances and not in others, an element's bits would depend on
  // which instance (edge or not) computed it.
  const __mmask16 m0 = lanes(nr), m1 = lanes(nr > 16 ? nr - 16 : 0);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    __m512 c0, c1;
    if (beta_kind == Beta::kZero) {  // C = alpha acc
      c0 = _mm512_mul_ps(va, acc0[r]);
      c1 = _mm512_mul_ps(va, acc1[r]);
    } else {  // C = alpha acc + C, or alpha acc + beta C
      c0 = kFullN ? _mm512_loadu_ps(cr) : _mm512_maskz_loadu_ps(m0, cr);
      c1 = kFullN ? _mm512_loadu_ps(cr + 16) : _mm512_maskz_loadu_ps(m1, cr + 16);
      if (beta_kind == Beta::kOther) {
        c0 = _mm512_mul_ps(vb, c0);
        c1 = _mm512_mul_ps(vb, c1);
      }
      c0 = _mm512_fmadd_ps(va, acc0[r], c0);
      c1 = _mm512_fmadd_ps(va, acc1[r], c1);
    }
    if (kFullN) {
      _mm512_storeu_ps(cr, c0);
      _mm512_storeu_ps(cr + 16, c1);
    } else {
      _mm512_mask_storeu_ps(cr, m0, c0);
      _mm512_mask_storeu_ps(cr + 16, m1, c1);
    }
  }
}

using Kernel = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, float, Beta, float);

// kKernels[mr - 1][full]: one instance per row count, so edge rows cost no wasted FMAs.
template <int... MR>
struct KernelTable {
  static constexpr Kernel table[][2] = {{&micro_kernel<MR + 1, false>, &micro_kernel<MR + 1, true>}...};
};
constexpr auto& kKernels = KernelTable<0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13>::table;
static_assert(sizeof(kKernels) / sizeof(kKernels[0]) == kMR);

}  // namespace

void sgemm_avx512(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // C = beta C
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  const int64_t blocks = (k + kKC - 1) / kKC, kc_even = (k + blocks - 1) / blocks;
  float* apack = a_scratch.get(kc_even * ((min64(kMC, m) + kMR - 1) / kMR * kMR));
  float* bpack = b_scratch.get(kc_even * ((min64(kNC, n) + kNR - 1) / kNR * kNR));
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = min64(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kc_even) {
      const int64_t kc = min64(kc_even, k - pc);
      const Beta kind = pc > 0 || beta == 1.0f ? Beta::kOne : (beta == 0.0f ? Beta::kZero : Beta::kOther);
      pack_b(tb, b, ldb, pc, kc, jc, nc, bpack);
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = min64(kMC, m - ic);
        pack_a(ta, a, lda, ic, mc, pc, kc, apack);
        for (int64_t i0 = 0; i0 < mc; i0 += kMR) {
          const int64_t mr = min64(kMR, mc - i0);
          const float* ap = apack + i0 * kc;
          for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
            const int64_t nr = min64(kNR, nc - j0);
            kKernels[mr - 1][nr == kNR](kc, ap, bpack + j0 * kc, c + (ic + i0) * ldc + jc + j0, ldc, nr, alpha, kind,
                                        beta);
          }
        }
      }
    }
  }
}

}  // namespace mt::cpu
