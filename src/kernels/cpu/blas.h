#pragma once
// The one door to GEMM for the CPU kernels: a row-major single-threaded sgemm.
// We thread over output tiles ourselves (results then do not depend on the thread count), so
// the GEMM must not thread inside: the pthread build of OpenBLAS would otherwise start its own
// pool per call from every OpenMP thread (16 x 16 threads on a 16-core machine, 100x slower).
// It leads to our own kernel on the AVX-512 and AVX2 paths (sgemm_avx512.cpp, sgemm_avx2.cpp),
// to OpenBLAS on the portable path (kernels/cpu_isa.h chooses).
#include <cstdint>

namespace mt::cpu {

// C[m, n] = alpha op(A) op(B) + beta C; all row-major with leading dimensions lda, ldb, ldc.
// beta = 0: C is not read. Not bit-identical to one call over a larger C with either
// implementation in general, so callers tile C by its shape only.
void sgemm_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The implementations behind the door, for tests and benchmarks. sgemm_avx512 and sgemm_avx2
// exist on x86-64 only and may only be called on their path: sgemm_avx512_available() (cpu_isa()
// is kAvx512) or sgemm_avx2_available() (cpu_isa() is kAvx2; an AVX-512 CPU runs it with
// MT_CPU_ISA=avx2). The same choice selects the other kernels of the path (attention, GeLU,
// cross-entropy), so tests/CMakeLists.txt runs the kernel tests on each path.
bool sgemm_avx512_available();
bool sgemm_avx2_available();
#if defined(__x86_64__)
void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void sgemm_avx2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
#endif
void sgemm_openblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace mt::cpu
