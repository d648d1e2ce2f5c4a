#pragma once
// The one door to GEMM for the CPU kernels: a row-major single-threaded sgemm.
// We thread over output tiles ourselves (results then do not depend on the thread count), so
// the GEMM must not thread inside: the pthread build of OpenBLAS would otherwise start its own
// pool per call from every OpenMP thread (16 x 16 threads on a 16-core machine, 100x slower).
// On a CPU with AVX-512F the door leads to our own kernel (sgemm_avx512.cpp), else to OpenBLAS.
#include <cstdint>

namespace mt::cpu {

// C[m, n] = alpha op(A) op(B) + beta C; all row-major with leading dimensions lda, ldb, ldc.
// beta = 0: C is not read. Not bit-identical to one call over a larger C with either
// implementation in general, so callers tile C by its shape only.
void sgemm_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The two implementations behind the door, for tests and benchmarks. sgemm_avx512 exists on
// x86-64 only and may only be called when sgemm_avx512_available(): the CPU has AVX-512F and
// the environment does not set MT_CPU_AVX512=0 (read once). That switch also turns off the
// other AVX-512 kernels (attention, GeLU, cross-entropy), so the portable paths can be tested
// on an AVX-512 machine (tests/CMakeLists.txt runs the kernel tests both ways).
bool sgemm_avx512_available();
#if defined(__x86_64__)
void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
#endif
void sgemm_openblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace mt::cpu
