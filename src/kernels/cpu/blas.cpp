#include "kernels/cpu/blas.h"

#include <cblas.h>

#include <cstdlib>
#include <mutex>
#include <string_view>

namespace mt::cpu {

void sgemm_openblas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

bool sgemm_avx512_available() {
#if defined(__x86_64__)
  static const bool ok = [] {
    const char* e = std::getenv("MT_CPU_AVX512");
    return __builtin_cpu_supports("avx512f") && !(e && std::string_view(e) == "0");
  }();
  return ok;
#else
  return false;
#endif
}

void sgemm_serial(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
#if defined(__x86_64__)
  static const bool avx512 = sgemm_avx512_available();
  if (avx512) return sgemm_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
  sgemm_openblas(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace mt::cpu
