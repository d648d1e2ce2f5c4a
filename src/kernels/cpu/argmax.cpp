// argmax.h on the CPU: one row per iteration, scanned in column order (strictly greater wins,
// so the first maximum stays).
#include "kernels/cpu/argmax.h"

#include <cmath>

#include "kernels/cpu/load_store.h"

namespace mt::cpu {

void argmax_rows(const Tensor& logits, int64_t n_valid, const Tensor& out) {
  const int64_t N = logits.size(0), V = logits.size(1);
  dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      int32_t best = 0;
      float best_v = -INFINITY;
      for (int64_t c = 0; c < n_valid; ++c) {
        const float v = to_f32(x[r * V + c]);
        if (v > best_v) {
          best_v = v;
          best = int32_t(c);
        }
      }
      out.data<int32_t>()[r] = best;
    }
  });
}

}  // namespace mt::cpu
