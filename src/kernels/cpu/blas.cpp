#include "kernels/cpu/blas.h"

#include <cblas.h>

#include <mutex>

#include "kernels/cpu_isa.h"

namespace mt::cpu {

void sgemm_openblas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

bool sgemm_avx512_available() { return cpu_isa() == CpuIsa::kAvx512; }
bool sgemm_avx2_available() { return cpu_isa() == CpuIsa::kAvx2; }

void sgemm_serial(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
#if defined(__x86_64__)
  static const CpuIsa isa = cpu_isa();
  if (isa == CpuIsa::kAvx512) return sgemm_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (isa == CpuIsa::kAvx2) return sgemm_avx2(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
  sgemm_openblas(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace mt::cpu
