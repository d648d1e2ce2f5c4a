#pragma once
// The packed sgemm's driver, shared by sgemm_avx512.cpp and sgemm_avx2.cpp: C[m, n] = alpha
// op(A) op(B) + beta C, row-major, from operands packed into micro-panels of op(A) (kMR rows) and
// strips of op(B) (kNR columns). Each ISA file holds only its register tile: the micro-kernel and
// the packing routines that lay the operands out the way it reads them; this file holds the
// loops around them, the packed forms' sizes and offsets, and the serial entry point. (The why
// of packing and blocking is in sgemm_avx512.cpp's opening comment.)
//
// A template over the path's traits K, which provides as static members:
//   kMR, kNR      the register tile: rows of C per micro-panel, columns per strip
//   kAStep        floats per k step in an A micro-panel (kMR rounded up to a whole vector)
//   kKC, kNC      the deepest k block, and columns of C per block in gemm_packed
//   pack_a_block(trans_a, a, lda, m, pc, kc, q0, q1, dst, row_sums): panels q0 .. q1 of op(A)
//                 for the k block at pc, kc deep; panel q at dst + q * kc * kAStep
//   pack_b_block(trans_b, b, ldb, n, pc, kc, s0, s1, dst): strips s0 .. s1 of op(B), strip s at
//                 dst + s * kc * kNR, zero past column n
//   kernel(mr, full_n): the micro-kernel for mr <= kMR rows and all kNR columns (full_n) or
//                 fewer, with the signature of Kernel below
//
// Summation order: each C element is summed p = 0, 1, .. kc - 1 within a k block (inside the
// micro-kernel), the k blocks added to C in order (beta = 1 after the first); k blocks are cut
// by k_block(k), a function of k only. So the order depends on k only, never on where the
// element sits in a tile or on m, n, and a caller may tile C any way it likes (gemm_tiles.cpp's
// threads do) without changing a bit.
//
// Everything here is at internal linkage (an unnamed namespace) and uses no C++ library
// templates, so each ISA file compiles its own instance with its own flags and no instance built
// for one ISA can be picked by the linker for code that runs on another: include it only from
// the sgemm_*.cpp files.
#include <cstdint>
#include <cstdlib>

namespace mt::cpu {
namespace {
namespace sgemm_driver {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// What the micro-kernel does with C: C = alpha acc (not read), C += alpha acc, C = alpha acc +
// beta C.
enum class Beta { kZero, kOne, kOther };
inline Beta beta_kind(float beta) { return beta == 1.0f ? Beta::kOne : (beta == 0.0f ? Beta::kZero : Beta::kOther); }

// C[0..mr, 0..nr) = alpha sum_p a[p * kAStep + r] b[p * kNR + j] + beta C, p = 0 .. kc - 1 in order.
using Kernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t nr, float alpha,
                        Beta beta_kind, float beta);

// The serial entry's packed operands, one pair per thread and ISA file, grown on demand, freed at
// thread exit.
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

template <class K>
struct Driver {
  // k is cut into blocks of kc = k_block(k) rows (the last may be shorter), as equal as possible.
  static int64_t k_block(int64_t k) { return k > 0 ? div_up(k, div_up(k, K::kKC)) : 1; }

  static int64_t packed_a_floats(int64_t m, int64_t k) { return div_up(m, K::kMR) * K::kAStep * k; }
  static int64_t packed_b_floats(int64_t k, int64_t n) { return div_up(n, K::kNR) * K::kNR * k; }

  // The k block at pc of packed op(A) starts at pa + pc * panels * kAStep (panels of every row);
  // of packed op(B) at pb + pc * strips * kNR.
  static void pack_a(bool ta, const float* a, int64_t lda, int64_t m, int64_t k, int64_t i0, int64_t rows, float* pa,
                     float* row_sums) {
    const int64_t kc_even = k_block(k), panels = div_up(m, K::kMR);
    for (int64_t pc = 0; pc < k; pc += kc_even)
      K::pack_a_block(ta, a, lda, m, pc, min64(kc_even, k - pc), i0 / K::kMR, div_up(i0 + rows, K::kMR),
                      pa + pc * panels * K::kAStep, row_sums);
  }

  static void pack_b(bool tb, const float* b, int64_t ldb, int64_t k, int64_t n, int64_t j0, int64_t cols, float* pb) {
    const int64_t kc_even = k_block(k), strips = div_up(n, K::kNR);
    for (int64_t pc = 0; pc < k; pc += kc_even)
      K::pack_b_block(tb, b, ldb, n, pc, min64(kc_even, k - pc), j0 / K::kNR, div_up(j0 + cols, K::kNR),
                      pb + pc * strips * K::kNR);
  }

  // Loops, outer to inner: columns in kNC blocks, k blocks, row micro-panels (one stays in L1),
  // column strips (the kc x nc block of B stays in L2).
  static void gemm_packed(int64_t m, int64_t n, int64_t k, float alpha, const float* pa, const float* pb, float beta,
                          float* c, int64_t ldc, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    if (k <= 0) {  // C = beta C
      for (int64_t i = i0; i < i0 + rows; ++i)
        for (int64_t j = j0; j < j0 + cols; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
      return;
    }
    const int64_t kc_even = k_block(k), panels = div_up(m, K::kMR), strips = div_up(n, K::kNR);
    for (int64_t jc = j0; jc < j0 + cols; jc += K::kNC) {
      const int64_t jc_end = min64(jc + K::kNC, j0 + cols);
      for (int64_t pc = 0; pc < k; pc += kc_even) {
        const int64_t kc = min64(kc_even, k - pc);
        const Beta kind = pc > 0 ? Beta::kOne : beta_kind(beta);
        const float* a_block = pa + pc * panels * K::kAStep;
        const float* b_block = pb + pc * strips * K::kNR;
        for (int64_t i = i0; i < i0 + rows; i += K::kMR) {
          const int64_t mr = min64(K::kMR, min64(m, i0 + rows) - i);
          const float* ap = a_block + (i / K::kMR) * kc * K::kAStep;
          for (int64_t j = jc; j < jc_end; j += K::kNR) {
            const int64_t nr = min64(K::kNR, jc_end - j);
            K::kernel(mr, nr == K::kNR)(kc, ap, b_block + (j / K::kNR) * kc * K::kNR, c + i * ldc + j, ldc, nr, alpha,
                                        kind, beta);
          }
        }
      }
    }
  }

  // One k block of any depth kc (attention's products): panels and strips packed alone.
  static int64_t panel_floats(int64_t rows, int64_t kc) { return div_up(rows, K::kMR) * K::kAStep * kc; }
  static int64_t strip_floats(int64_t kc, int64_t cols) { return div_up(cols, K::kNR) * K::kNR * kc; }

  static void pack_panels(bool ta, const float* a, int64_t lda, int64_t rows, int64_t kc, float* dst) {
    K::pack_a_block(ta, a, lda, rows, 0, kc, 0, div_up(rows, K::kMR), dst, nullptr);
  }

  static void pack_strips(bool tb, const float* b, int64_t ldb, int64_t kc, int64_t cols, float* dst) {
    K::pack_b_block(tb, b, ldb, cols, 0, kc, 0, div_up(cols, K::kNR), dst);
  }

  static void gemm_block(int64_t kc, const float* panels, int64_t rows, const float* strips, int64_t cols, float alpha,
                         float beta, float* c, int64_t ldc) {
    const Beta kind = beta_kind(beta);
    for (int64_t i = 0; i < rows; i += K::kMR) {
      const int64_t mr = min64(K::kMR, rows - i);
      for (int64_t j = 0; j < cols; j += K::kNR) {
        const int64_t nr = min64(K::kNR, cols - j);
        K::kernel(mr, nr == K::kNR)(kc, panels + (i / K::kMR) * kc * K::kAStep, strips + (j / K::kNR) * kc * K::kNR,
                                    c + i * ldc + j, ldc, nr, alpha, kind, beta);
      }
    }
  }

  // The serial sgemm: both operands packed whole into this thread's scratch, then one
  // gemm_packed over all of C.
  static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    float* pa = a_scratch.get(packed_a_floats(m, k));
    float* pb = b_scratch.get(packed_b_floats(k, n));
    pack_a(ta, a, lda, m, k, 0, m, pa, nullptr);
    pack_b(tb, b, ldb, k, n, 0, n, pb);
    gemm_packed(m, n, k, alpha, pa, pb, beta, c, ldc, 0, m, 0, n);
  }
};

}  // namespace sgemm_driver
}  // namespace
}  // namespace mt::cpu
