// The CPU sgemm door (kernels/cpu/blas.h): sgemm_serial, and the kernel of the path that runs
// (AVX-512 or AVX2, kernels/cpu_isa.h) and OpenBLAS behind it, against a double-precision triple loop over odd shapes, both transposes, several
// alpha/beta, and leading dimensions wider than the matrices.
//
// Tolerance: a k-term fp32 dot product is within gamma_k = k u / (1 - k u) of the exact value
// relative to sum_p |a_ip b_pj| (u = 2^-24, any summation order); scaling by alpha, beta C and
// the final sum add a rounding each. We allow 2 (k + 2) u |alpha| sum_p |a_ip b_pj| +
// 2 u |beta c_ij| + 1e-30, twice the first-order bound.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;
using cpu::sgemm_serial;

using Sgemm = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                       float, float*, int64_t);

// Row-major operands with padded leading dimensions, so strides are exercised.
struct Problem {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
  int64_t lda, ldb, ldc;
  std::vector<float> a, b, c;

  Problem(bool ta_, bool tb_, int64_t m_, int64_t n_, int64_t k_, float alpha_, float beta_, uint32_t seed)
      : ta(ta_), tb(tb_), m(m_), n(n_), k(k_), alpha(alpha_), beta(beta_) {
    const int64_t a_rows = ta ? k : m, b_rows = tb ? n : k;
    lda = (ta ? m : k) + 3;
    ldb = (tb ? k : n) + 5;
    ldc = n + 2;
    a = random_vec(size_t(std::max<int64_t>(a_rows * lda, 1)), seed);
    b = random_vec(size_t(std::max<int64_t>(b_rows * ldb, 1)), seed + 1);
    c = random_vec(size_t(std::max<int64_t>(m * ldc, 1)), seed + 2);
  }
  double op_a(int64_t i, int64_t p) const { return ta ? a[p * lda + i] : a[i * lda + p]; }
  double op_b(int64_t p, int64_t j) const { return tb ? b[j * ldb + p] : b[p * ldb + j]; }

  std::vector<float> run(Sgemm f) const {
    std::vector<float> out = c;
    f(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, out.data(), ldc);
    return out;
  }

  // Checks `got` against the double reference within the bound above; the padding columns of C
  // must be untouched.
  void check(const std::vector<float>& got, const char* what) const {
    constexpr double u = 1.0 / (1 << 24);
    int reported = 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < ldc; ++j) {
        const double g = got[i * ldc + j];
        if (j >= n) {
          if (g != c[i * ldc + j] && reported++ < 5)
            ADD_FAILURE() << what << ": padding C[" << i << "," << j << "] written";
          continue;
        }
        double s = 0, abs_s = 0;
        for (int64_t p = 0; p < k; ++p) {
          s += op_a(i, p) * op_b(p, j);
          abs_s += std::abs(op_a(i, p) * op_b(p, j));
        }
        const double c0 = c[i * ldc + j];
        const double want = alpha * s + (beta == 0.0f ? 0.0 : beta * c0);
        const double tol = 2 * double(k + 2) * u * std::abs(alpha) * abs_s + 2 * u * std::abs(beta * c0) + 1e-30;
        if (!(std::abs(g - want) <= tol) && reported++ < 5)
          ADD_FAILURE() << what << " C[" << i << "," << j << "]: got " << g << ", want " << want << " (tol " << tol
                        << ")";
      }
    }
  }
};

struct Case {
  bool ta, tb;
  float alpha, beta;
};

class SgemmCpu : public ::testing::TestWithParam<Case> {};

// Our kernel on the path that runs (AVX-512 or AVX2), with its name; null on the portable path.
struct Simd {
  Sgemm fn = nullptr;
  const char* name = "";
};
Simd simd_sgemm() {
#if defined(__x86_64__)
  if (cpu::sgemm_avx512_available()) return {&cpu::sgemm_avx512, "AVX-512"};
  if (cpu::sgemm_avx2_available()) return {&cpu::sgemm_avx2, "AVX2"};
#endif
  return {};
}

const int64_t kSizes[] = {1, 7, 33, 130};

TEST_P(SgemmCpu, MatchesDoublePrecisionReferenceOverOddShapes) {
  const Case cs = GetParam();
  uint32_t seed = 100;
  for (int64_t m : kSizes)
    for (int64_t n : kSizes)
      for (int64_t k : kSizes) {
        const Problem pr(cs.ta, cs.tb, m, n, k, cs.alpha, cs.beta, seed += 3);
        SCOPED_TRACE(::testing::Message() << "m " << m << " n " << n << " k " << k);
        pr.check(pr.run(&sgemm_serial), "sgemm_serial");
        pr.check(pr.run(&cpu::sgemm_openblas), "OpenBLAS");
        if (const Simd x = simd_sgemm(); x.fn) pr.check(pr.run(x.fn), x.name);
      }
}

INSTANTIATE_TEST_SUITE_P(TransposesAlphaBeta, SgemmCpu,
                         ::testing::Values(Case{false, false, 1.0f, 0.0f}, Case{false, true, 1.0f, 1.0f},
                                           Case{true, false, -0.5f, 0.3f}, Case{true, true, 2.0f, 0.0f},
                                           Case{false, true, 0.7f, -1.5f}, Case{true, false, 1.0f, 1.0f}));

// Sizes that cross the kernel's blocks: k past one kc block (256), n past one column block
// (512), m past one row block (252), and a k with uneven blocks.
TEST(SgemmCpu, MatchesReferenceAcrossBlockBoundaries) {
  const Problem shapes[] = {Problem(false, true, 300, 530, 600, 1.0f, 1.0f, 7),
                            Problem(true, false, 20, 40, 513, 1.0f, 0.0f, 8)};
  for (const Problem& pr : shapes) {
    pr.check(pr.run(&sgemm_serial), "sgemm_serial");
    if (const Simd x = simd_sgemm(); x.fn) pr.check(pr.run(x.fn), x.name);
  }
}

TEST(SgemmCpu, KZeroScalesCByBeta) {
  for (float beta : {0.0f, 0.5f}) {
    Problem pr(false, false, 7, 9, 0, 1.0f, beta, 11);
    pr.check(pr.run(&sgemm_serial), "k = 0");
  }
}

TEST(SgemmCpu, BetaZeroDoesNotReadC) {
  Problem pr(false, true, 33, 33, 7, 1.0f, 0.0f, 12);
  for (float& x : pr.c) x = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> got = pr.run(&sgemm_serial);
  for (int64_t i = 0; i < pr.m; ++i)
    for (int64_t j = 0; j < pr.n; ++j) ASSERT_FALSE(std::isnan(got[i * pr.ldc + j])) << i << "," << j;
}

// Our kernel (AVX-512 or AVX2) and OpenBLAS compute the same products within the bound (each is
// checked against the reference above); here on the model's shapes, where they must agree
// within 2 (k + 2) u (sum_p |a b| + |beta c|) of each other.
TEST(SgemmCpu, OwnKernelAndOpenBlasAgree) {
  const Simd simd = simd_sgemm();
  if (!simd.fn) GTEST_SKIP() << "the portable path runs OpenBLAS only";
  const Problem shapes[] = {Problem(false, true, 96, 384, 384, 1.0f, 0.0f, 21),
                            Problem(false, false, 64, 384, 1536, 1.0f, 0.0f, 22),
                            Problem(true, false, 384, 96, 256, 1.0f, 1.0f, 23)};
  for (const Problem& pr : shapes) {
    const std::vector<float> x = pr.run(simd.fn), y = pr.run(&cpu::sgemm_openblas);
    double worst = 0;
    for (int64_t i = 0; i < pr.m; ++i)
      for (int64_t j = 0; j < pr.n; ++j) {
        double abs_s = std::abs(pr.beta * pr.c[i * pr.ldc + j]);
        for (int64_t p = 0; p < pr.k; ++p) abs_s += std::abs(pr.op_a(i, p) * pr.op_b(p, j));
        worst = std::max(worst, std::abs(double(x[i * pr.ldc + j]) - y[i * pr.ldc + j]) / abs_s);
      }
    EXPECT_LE(worst, 2.0 * double(pr.k + 2) / (1 << 24)) << "m " << pr.m << " n " << pr.n << " k " << pr.k;
  }
}

// Each C element's arithmetic depends on k only, so computing C in tiles gives the very bits
// of computing it whole: the caller may tile C any way it likes.
TEST(SgemmCpu, OwnKernelResultDoesNotDependOnTiling) {
  const Simd simd = simd_sgemm();
  if (!simd.fn) GTEST_SKIP() << "the portable path runs OpenBLAS only";
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Problem pr(ta, tb, 130, 100, 300, 1.5f, 0.5f, 31);
      const std::vector<float> whole = pr.run(simd.fn);
      std::vector<float> tiled = pr.c;
      const int64_t rows[] = {0, 5, 61, 130}, cols[] = {0, 33, 47, 100};
      for (int ri = 0; ri < 3; ++ri)
        for (int ci = 0; ci < 3; ++ci) {
          const int64_t i0 = rows[ri], j0 = cols[ci], mm = rows[ri + 1] - i0, nn = cols[ci + 1] - j0;
          const float* a = ta ? pr.a.data() + i0 : pr.a.data() + i0 * pr.lda;
          const float* b = tb ? pr.b.data() + j0 * pr.ldb : pr.b.data() + j0;
          simd.fn(ta, tb, mm, nn, pr.k, pr.alpha, a, pr.lda, b, pr.ldb, pr.beta, tiled.data() + i0 * pr.ldc + j0,
                  pr.ldc);
        }
      EXPECT_EQ(0, std::memcmp(whole.data(), tiled.data(), whole.size() * sizeof(float))) << ta << tb;
    }
}

}  // namespace
}  // namespace mt
