// Single-threaded fp32 GEMM with AVX2 + FMA: C[m, n] = alpha op(A) op(B) + beta C, row-major.
// sgemm_avx512.cpp's design in 8 lanes (see there for the why of packing, blocking and order);
// what differs is the register tile. This file holds the micro-kernel and the packing; the loops
// around them are sgemm_driver.h's, shared with sgemm_avx512.cpp.
//
// The micro-kernel keeps a 6 x 16 block of C in 12 ymm accumulators; per step p it loads 16
// floats of row p of op(B) (two ymm) and broadcasts 6 floats of column p of op(A): 12 FMAs per
// 8 loads, with 15 of the 16 ymm registers live. op(A) is packed in 6-row micro-panels (kc x 8
// floats, p-major, one aligned 32-byte line per p, 2 lanes unused) and op(B) in 16-column strips
// (kc x 16); transposed operands go through 8 x 8 in-register transposes.
//
// Each C element is summed in the order p = 0, 1, ... k - 1 within a kc block, blocks added to C
// in order: a function of k only, so the caller's tiling and thread count cannot change a bit.
//
// Compiled with -mavx2 -mfma -ffp-contract=off (src/kernels/CMakeLists.txt) and entered only
// when cpu_isa() is kAvx2; like sgemm_avx512.cpp it includes no C++ library templates and keeps
// everything but its entry points at internal linkage.
#include "kernels/cpu/sgemm_avx2.h"

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/sgemm_driver.h"

namespace mt::cpu {
namespace avx2 {
namespace {

constexpr int kMR = int(kRows);  // rows of C per micro-kernel: 12 accumulators + 2 B + 1 A register
constexpr int kNR = int(kCols);  // columns of C per micro-kernel: two ymm
constexpr int64_t kAStep = 8;    // floats per p in an A micro-panel: 6 used, one aligned line
constexpr int64_t kNC = 512;     // columns per block in gemm_packed: a kc x nc block of B is 512 KiB

using sgemm_driver::Beta;
using sgemm_driver::div_up;
using sgemm_driver::min64;

// Lanes < n all ones (n <= 0: none), for maskload / maskstore.
inline __m256i lanes(int64_t n) {
  const int c = n >= 8 ? 8 : (n < 0 ? 0 : int(n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// dst[c * ldd + r] = src[r * lds + c] for r < 8, c < cols (cols <= 8), rows past `rows` (<= 8)
// read as 0: one 8 x 8 transpose in registers. Always stores whole 8-float lines of dst.
// R > 0 is the common block, R rows and all 8 columns (a 6-row A panel, an 8-row half of a B
// strip), known at compile time: no masks and no per-row tests; R = 0 handles the edges.
template <int R>
inline void transpose8(const float* src, int64_t lds, int rows, int cols, float* dst, int64_t ldd) {
  if (R > 0) rows = R, cols = 8;
  const __m256i cm = lanes(cols);
  __m256 r[8], t[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    r[i] = i >= rows ? _mm256_setzero_ps() : (cols == 8 ? _mm256_loadu_ps(src + i * lds) : _mm256_maskload_ps(src + i * lds, cm));
  // t[2i], per 128-bit half H: r[2i][4H], r[2i+1][4H], r[2i][4H+1], r[2i+1][4H+1]; t[2i+1] the next two columns.
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  // r[4g + c], half H: column 4H + c of rows 4g .. 4g + 3.
  for (int g = 0; g < 8; g += 4) {
    r[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
    r[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
    r[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    r[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    if (c < cols) _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(r[c], r[4 + c], 0x20));
    if (c + 4 < cols) _mm256_storeu_ps(dst + (c + 4) * ldd, _mm256_permute2f128_ps(r[c], r[4 + c], 0x31));
  }
}

// dst[p * ldd + j] = src[j * lds + p] for j < rows, p < cols, in 8 x 8 blocks whose stores fill
// whole lines (zeros past `rows` up to the next multiple of 8; the packed forms have room).
void transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t j = 0; j < rows; j += 8)
    for (int64_t p = 0; p < cols; p += 8) {
      const int nr = int(min64(8, rows - j)), nc = int(min64(8, cols - p));
      const float* s = src + j * lds + p;
      float* d = dst + p * ldd + j;
      if (nc == 8 && nr == 8) {
        transpose8<8>(s, lds, nr, nc, d, ldd);
      } else if (nc == 8 && nr == kMR) {
        transpose8<kMR>(s, lds, nr, nc, d, ldd);
      } else {
        transpose8<0>(s, lds, nr, nc, d, ldd);
      }
    }
}

// As sgemm_avx512.cpp: copying packs walk kGroup panels (strips) at a time down the kc rows.
constexpr int64_t kGroup = 8;

// Panels g .. g + G of op(A) = A^T for the k block at pc, copied down the kc rows of A (column p
// of op(A) is row pc + p of A); the 8 floats read where they lie inside the row, the last panel
// (rows past m) with masked loads. With row_sums, the G panels' sums stay in registers over
// the kc rows (a masked store per row and panel, vmaskmovps, is slow on AMD). G is a
// compile-time count so that the group's loop unrolls with its sums in registers (with a
// run-time count the compiler kept the loop state on the stack).
template <int G, bool kSums>
void copy_panels(const float* a, int64_t lda, int64_t m, int64_t pc, int64_t kc, int64_t g, float* dst,
                 float* row_sums) {
  __m256 sums[G];
  const bool tail = (g + G) * kMR + 2 > m;  // the group's last load would read past row m
  if (kSums)
    for (int i = 0; i < G; ++i) sums[i] = _mm256_maskload_ps(row_sums + (g + i) * kMR, lanes(m - (g + i) * kMR));
  for (int64_t p = 0; p < kc; ++p) {
    const float* src = a + (pc + p) * lda + g * kMR;
    float* d = dst + g * kc * kAStep + p * kAStep;
#pragma GCC unroll 8
    for (int i = 0; i < G; ++i) {
      const int64_t r0 = (g + i) * kMR;
      const __m256 v = tail && r0 + 8 > m ? _mm256_maskload_ps(src + i * kMR, lanes(m - r0)) : _mm256_loadu_ps(src + i * kMR);
      _mm256_store_ps(d + i * kc * kAStep, v);
      if (kSums) sums[i] = _mm256_add_ps(sums[i], v);
    }
  }
  if (kSums)
    for (int i = 0; i < G; ++i)
      _mm256_maskstore_ps(row_sums + (g + i) * kMR, lanes(min64(kMR, m - (g + i) * kMR)), sums[i]);
}

// Panels q0 .. q1 of op(A) for the k block at pc (kc deep): panel q holds dst[q * kc * 8 + p * 8
// + r] = op(A)[q * 6 + r, pc + p] for r < 6 (lanes 6, 7 hold whatever; the kernel reads r < 6).
// With row_sums (trans_a only), also adds each packed value to row_sums[row], in k order.
void pack_a_block(bool ta, const float* a, int64_t lda, int64_t m, int64_t pc, int64_t kc, int64_t q0, int64_t q1,
                  float* dst, float* row_sums) {
  if (ta) {  // kGroup panels at a time, the rest one by one
    int64_t g = q0;
    for (; g + kGroup <= q1; g += kGroup)
      row_sums ? copy_panels<kGroup, true>(a, lda, m, pc, kc, g, dst, row_sums)
               : copy_panels<kGroup, false>(a, lda, m, pc, kc, g, dst, row_sums);
    for (; g < q1; ++g)
      row_sums ? copy_panels<1, true>(a, lda, m, pc, kc, g, dst, row_sums)
               : copy_panels<1, false>(a, lda, m, pc, kc, g, dst, row_sums);
  } else {
    for (int64_t q = q0; q < q1; ++q)
      transpose(a + q * kMR * lda + pc, lda, min64(kMR, m - q * kMR), kc, dst + q * kc * kAStep, kAStep);
  }
}

// Strips s0 .. s1 of op(B) for the k block at pc: strip s holds dst[s * kc * 16 + p * 16 + j] =
// op(B)[pc + p, s * 16 + j], zero past column n.
void pack_b_block(bool tb, const float* b, int64_t ldb, int64_t n, int64_t pc, int64_t kc, int64_t s0, int64_t s1,
                  float* dst) {
  if (tb) {  // row j of B is column j of op(B)
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t nr = min64(kNR, n - s * kNR);
      float* d = dst + s * kc * kNR;
      if (nr <= 8)  // the transposes fill lines 0 .. 7 only
        for (int64_t p = 0; p < kc; ++p) _mm256_store_ps(d + p * kNR + 8, _mm256_setzero_ps());
      transpose(b + s * kNR * ldb + pc, ldb, nr, kc, d, kNR);
    }
    return;
  }
  for (int64_t g = s0; g < s1; g += kGroup) {
    const int64_t g1 = min64(g + kGroup, s1);
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b + (pc + p) * ldb;
      for (int64_t s = g; s < g1; ++s) {
        const int64_t j = s * kNR, nr = min64(kNR, n - j);
        float* d = dst + s * kc * kNR + p * kNR;
        if (nr == kNR) {
          _mm256_store_ps(d, _mm256_loadu_ps(src + j));
          _mm256_store_ps(d + 8, _mm256_loadu_ps(src + j + 8));
        } else {
          _mm256_store_ps(d, _mm256_maskload_ps(src + j, lanes(nr)));
          _mm256_store_ps(d + 8, _mm256_maskload_ps(src + j + 8, lanes(nr - 8)));
        }
      }
    }
  }
}

// C[0..MR, 0..nr) = alpha sum_p a[p * 8 + r] b[p * 16 + j] + beta C (nr <= 16), with
// sgemm_avx512.cpp's explicit FMAs and beta cases.
template <int MR, bool kFullN>
void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t nr, float alpha,
                  Beta beta_kind, float beta) {
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, a += kAStep, b += kNR) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
  const __m256i m0 = lanes(nr), m1 = lanes(nr - 8);
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    __m256 c0, c1;
    if (beta_kind == Beta::kZero) {
      c0 = _mm256_mul_ps(va, acc0[r]);
      c1 = _mm256_mul_ps(va, acc1[r]);
    } else {
      c0 = kFullN ? _mm256_loadu_ps(cr) : _mm256_maskload_ps(cr, m0);
      c1 = kFullN ? _mm256_loadu_ps(cr + 8) : _mm256_maskload_ps(cr + 8, m1);
      if (beta_kind == Beta::kOther) {
        c0 = _mm256_mul_ps(vb, c0);
        c1 = _mm256_mul_ps(vb, c1);
      }
      c0 = _mm256_fmadd_ps(va, acc0[r], c0);
      c1 = _mm256_fmadd_ps(va, acc1[r], c1);
    }
    if (kFullN) {
      _mm256_storeu_ps(cr, c0);
      _mm256_storeu_ps(cr + 8, c1);
    } else {
      _mm256_maskstore_ps(cr, m0, c0);
      _mm256_maskstore_ps(cr + 8, m1, c1);
    }
  }
}

using sgemm_driver::Kernel;

template <int... MR>
struct KernelTable {
  static constexpr Kernel table[][2] = {{&micro_kernel<MR + 1, false>, &micro_kernel<MR + 1, true>}...};
};
constexpr auto& kKernels = KernelTable<0, 1, 2, 3, 4, 5>::table;
static_assert(sizeof(kKernels) / sizeof(kKernels[0]) == kMR);

// The register tile and its packing, for the shared driver (sgemm_driver.h).
struct Tile {
  static constexpr int kMR = avx2::kMR, kNR = avx2::kNR;
  static constexpr int64_t kAStep = avx2::kAStep, kKC = avx2::kKC, kNC = avx2::kNC;
  static constexpr auto pack_a_block = &avx2::pack_a_block;
  static constexpr auto pack_b_block = &avx2::pack_b_block;
  static Kernel kernel(int64_t mr, bool full_n) { return kKernels[mr - 1][full_n]; }
};
using Driver = sgemm_driver::Driver<Tile>;

}  // namespace

#include "kernels/cpu/sgemm_driver_entry_points.inc"

}  // namespace avx2

void sgemm_avx2(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  avx2::Driver::sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace mt::cpu
