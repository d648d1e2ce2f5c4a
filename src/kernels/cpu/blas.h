#pragma once
// The one door to BLAS for the CPU kernels: a row-major single-threaded sgemm.
// We thread over output tiles ourselves (results then do not depend on the thread count), so
// BLAS must not thread inside: the pthread build of OpenBLAS would otherwise start its own
// pool per call from every OpenMP thread (16 x 16 threads on a 16-core machine, 100x slower).
#include <cstdint>

namespace mt::cpu {

// C[m, n] = alpha op(A) op(B) + beta C; all row-major with leading dimensions lda, ldb, ldc.
void sgemm_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace mt::cpu
