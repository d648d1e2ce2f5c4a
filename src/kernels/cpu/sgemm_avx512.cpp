// Single-threaded fp32 GEMM with AVX-512: C[m, n] = alpha op(A) op(B) + beta C, row-major.
//
// The micro-kernel keeps a kRows x 32 block of C (kRows = 14) in 28 zmm accumulators; per step p
// it loads 32 floats of row p of op(B) (two zmm) and broadcasts 14 floats of column p of op(A),
// one FMA per accumulator: 28 FMAs per 16 loads, so the two FMA ports stay busy.
//
// Both operands are first packed, whatever their layout, into the order the kernel reads them
// (sgemm_avx512.h has the layout): op(A) in 14-row micro-panels (kc x 16 floats, p-major, one
// aligned line per p) and op(B) in 32-column strips (kc x 32, p-major). Reading the operands in
// place instead runs at half speed for the layouts here: rows of a kc-deep strip lie a leading
// dimension apart, each on its own 4 KiB page (TLB misses) and, for power-of-two dimensions, in
// one L1 set. Transposed operands are packed through 16 x 16 in-register transposes, the others
// by plain copies. Packing each operand once per product (not once per tile) is what lets a
// multi-threaded caller share it: gemm_tiles.cpp packs in parallel, then hands out tiles of C.
//
// The driver's loops (sgemm_driver.h, shared with sgemm_avx2.cpp), outer to inner: columns in
// kNC blocks, k in kc blocks (kc <= kKC, as equal as possible), rows in 14-row micro-panels (one
// stays in L1), columns in 32-wide strips (the kc x nc block of B stays in L2). Every C element
// is summed in the same order, p = 0, 1, ... k - 1 within a kc block, blocks added to C in order:
// that order depends on k only, never on where the element sits in a tile or on m, n. So the
// caller's tiling (and hence the thread count) cannot change a bit of the result.
//
// This file holds the micro-kernel and the packing, sgemm_driver.h the rest. It is compiled with
// AVX-512 flags (src/kernels/CMakeLists.txt, x86-64 only) and must only be entered after
// sgemm_avx512_available() (blas.cpp, built for the baseline). It includes no C++ library
// templates and keeps everything but its entry points at internal linkage, so no AVX-512 instance
// of a shared inline function can be picked by the linker for code that runs on AVX2-only
// machines.
#include "kernels/cpu/sgemm_avx512.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/sgemm_driver.h"

namespace mt::cpu {
namespace avx512 {
namespace {

constexpr int kMR = int(kRows);  // rows of C per micro-kernel: 28 accumulators + 2 B registers
constexpr int kNR = int(kCols);  // columns of C per micro-kernel: two zmm
constexpr int64_t kAStep = 16;   // floats per p in an A micro-panel: 14 used, one aligned line
constexpr int64_t kNC = 512;     // columns per block in gemm_packed: a kc x nc block of B is 512 KiB

using sgemm_driver::Beta;
using sgemm_driver::div_up;
using sgemm_driver::min64;

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }


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

// dst[p * ldd + j] = src[j * lds + p] for j < rows, p < cols: a rows x cols block transposed.
void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t j = 0; j < rows; j += 16)
    for (int64_t p = 0; p < cols; p += 16)
      transpose16(src + j * lds + p, lds, int(min64(16, rows - j)), int(min64(16, cols - p)), dst + p * ldd + j, ldd);
}

// The copying packs walk kGroup panels (strips) at a time down all kc rows: each row of the
// source gives a few lines and each destination panel one line per row, so the stores touch a
// handful of pages at a time; one pass over all panels per row wrote to a different 4 KiB page
// per panel (83 for 1152 rows) and ran at half speed on TLB misses.
constexpr int64_t kGroup = 8;

// Packs panels q0 .. q1 of op(A) for the k block at pc (kc deep) at dst: panel q holds
// dst[q * kc * kAStep + p * kAStep + r] = op(A)[q * 14 + r, pc + p] for r < 14 (rows past m are
// not written; the kernel for the last panel does not read them).
// With row_sums (trans_a only), also adds each packed value to row_sums[row], in k order; the
// sums of a group of panels stay in registers over the kc rows (a masked store and reload per
// row and panel waited on the store each time: no store forwarding for masked accesses).
void pack_a_block(bool ta, const float* a, int64_t lda, int64_t m, int64_t pc, int64_t kc, int64_t q0, int64_t q1,
                  float* dst, float* row_sums) {
  if (ta) {  // column p of op(A) is row pc + p of A: a plain copy, kGroup panels at a time
    for (int64_t g = q0; g < q1; g += kGroup) {
      const int g_n = int(min64(kGroup, q1 - g));
      __m512 sums[kGroup];
      if (row_sums)
        for (int i = 0; i < g_n; ++i)
          sums[i] = _mm512_maskz_loadu_ps(lanes(min64(kMR, m - (g + i) * kMR)), row_sums + (g + i) * kMR);
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = a + (pc + p) * lda;
        for (int i = 0; i < g_n; ++i) {
          const int64_t q = g + i;
          const __mmask16 mr = lanes(min64(kMR, m - q * kMR));
          const __m512 v = _mm512_maskz_loadu_ps(mr, src + q * kMR);
          _mm512_store_ps(dst + q * kc * kAStep + p * kAStep, v);
          if (row_sums) sums[i] = _mm512_add_ps(sums[i], v);
        }
      }
      if (row_sums)
        for (int i = 0; i < g_n; ++i)
          _mm512_mask_storeu_ps(row_sums + (g + i) * kMR, lanes(min64(kMR, m - (g + i) * kMR)), sums[i]);
    }
  } else {
    for (int64_t q = q0; q < q1; ++q)
      transpose(a + q * kMR * lda + pc, lda, min64(kMR, m - q * kMR), kc, dst + q * kc * kAStep, kAStep);
  }
}

// Packs strips s0 .. s1 of op(B) for the k block at pc (kc deep) at dst: strip s holds
// dst[s * kc * 32 + p * 32 + j] = op(B)[pc + p, s * 32 + j], zero past column n, so the kernel
// always loads whole rows.
void pack_b_block(bool tb, const float* b, int64_t ldb, int64_t n, int64_t pc, int64_t kc, int64_t s0, int64_t s1,
                  float* dst) {
  if (tb) {  // row j of B is column j of op(B)
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t nr = min64(kNR, n - s * kNR);
      float* d = dst + s * kc * kNR;
      if (nr < kNR)
        for (int64_t p = 0; p < kc; ++p) {
          _mm512_store_ps(d + p * kNR, _mm512_setzero_ps());
          _mm512_store_ps(d + p * kNR + 16, _mm512_setzero_ps());
        }
      transpose(b + s * kNR * ldb + pc, ldb, nr, kc, d, kNR);
    }
    return;
  }
  for (int64_t g = s0; g < s1; g += kGroup) {  // a plain copy, kGroup strips at a time
    const int64_t g1 = min64(g + kGroup, s1);
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b + (pc + p) * ldb;
      for (int64_t s = g; s < g1; ++s) {
        const int64_t j = s * kNR, nr = min64(kNR, n - j);
        float* d = dst + s * kc * kNR + p * kNR;
        _mm512_store_ps(d, _mm512_maskz_loadu_ps(lanes(nr), src + j));
        _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(lanes(nr > 16 ? nr - 16 : 0), src + j + 16));
      }
    }
  }
}

// C[0..MR, 0..nr) = alpha sum_p a[p * kAStep + r] b[p * 32 + j] + beta C (nr <= 32; beta C read
// only for Beta::kOther, C read for Beta::kOne). Packed operands, so only C needs masks.
template <int MR, bool kFullN>
void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t nr, float alpha,
                  Beta beta_kind, float beta) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, a += kAStep, b += kNR) {
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

using sgemm_driver::Kernel;

// kKernels[mr - 1][full]: one instance per row count, so edge rows cost no wasted FMAs.
template <int... MR>
struct KernelTable {
  static constexpr Kernel table[][2] = {{&micro_kernel<MR + 1, false>, &micro_kernel<MR + 1, true>}...};
};
constexpr auto& kKernels = KernelTable<0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13>::table;
static_assert(sizeof(kKernels) / sizeof(kKernels[0]) == kMR);

// The register tile and its packing, for the shared driver (sgemm_driver.h).
struct Tile {
  static constexpr int kMR = avx512::kMR, kNR = avx512::kNR;
  static constexpr int64_t kAStep = avx512::kAStep, kKC = avx512::kKC, kNC = avx512::kNC;
  static constexpr auto pack_a_block = &avx512::pack_a_block;
  static constexpr auto pack_b_block = &avx512::pack_b_block;
  static Kernel kernel(int64_t mr, bool full_n) { return kKernels[mr - 1][full_n]; }
};
using Driver = sgemm_driver::Driver<Tile>;

}  // namespace

#include "kernels/cpu/sgemm_driver_entry_points.inc"

}  // namespace avx512

void sgemm_avx512(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  avx512::Driver::sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace mt::cpu
