// Dispatch and argument checks for argmax.h.
#include "kernels/argmax.h"

#include "kernels/cpu/argmax.h"
#include "kernels/dispatch.h"
#ifdef MT_WITH_CUDA
#include "kernels/cuda/argmax.h"
#endif

namespace mt {

void argmax_rows(const Tensor& logits, int64_t n_valid, const Tensor& out, Stream s) {
  using namespace detail;
  check_float("argmax_rows", "logits", logits);
  check_dtype("argmax_rows", "out", out, DType::I32);
  MT_CHECK(logits.dim() == 2, "argmax_rows: logits {} must be [N, V]", logits.str());
  MT_CHECK(n_valid > 0 && n_valid <= logits.size(1), "argmax_rows: n_valid {} must be in [1, {}]", n_valid,
           logits.size(1));
  check_shape("argmax_rows", "out", out, {logits.size(0)});
  if (on_cuda("argmax_rows", {&logits, &out})) MT_CUDA_CALL(argmax_rows(logits, n_valid, out, s));
  cpu::argmax_rows(logits, n_valid, out);
}

}  // namespace mt
