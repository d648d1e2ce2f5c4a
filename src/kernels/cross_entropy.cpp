// Dispatch and argument checks for cross_entropy.h.
#include "kernels/cross_entropy.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab, const Tensor& losses,
                                    const Tensor* dloss, const Tensor* dlogits, Stream s) {
  using namespace detail;
  const char* op = "cross_entropy_forward_backward";
  check_float(op, "logits", logits);
  check_dtype(op, "targets", targets, DType::I32);
  check_dtype(op, "losses", losses, DType::F32);
  MT_CHECK(logits.dim() == 2, "{}: logits {} must be [N, Vp]", op, logits.str());
  const int64_t N = logits.size(0), Vp = logits.size(1);
  MT_CHECK(vocab > 0 && vocab <= Vp, "{}: vocab {} must be in [1, {}]", op, vocab, Vp);
  check_numel(op, "targets", targets, N);
  check_numel(op, "losses", losses, N);
  if (dlogits) {
    MT_CHECK(dloss, "{}: dlogits needs dloss", op);
    check_float(op, "dlogits", *dlogits);
    check_shape(op, "dlogits", *dlogits, logits.shape());
    MT_CHECK(dlogits->dtype() == logits.dtype(), "{}: dlogits {} must have logits' dtype", op, dlogits->str());
  }
  if (dloss) {
    check_dtype(op, "dloss", *dloss, DType::F32);
    check_numel(op, "dloss", *dloss, N);
  }
  if (on_cuda(op, {&logits, &targets, &losses, dloss, dlogits}))
    MT_CUDA_CALL(cross_entropy_forward_backward(logits, targets, vocab, losses, dloss, dlogits, s));
  cpu::cross_entropy_forward_backward(logits, targets, vocab, losses, dloss, dlogits);
}

}  // namespace mt
