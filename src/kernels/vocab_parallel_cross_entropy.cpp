// Dispatch and argument checks for vocab_parallel_cross_entropy.h (CPU only so far).
#include "kernels/vocab_parallel_cross_entropy.h"

#include "kernels/cpu/vocab_parallel_cross_entropy.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

void check_common(const char* op, const Tensor& logits, int64_t vocab_start, int64_t vocab,
                  std::initializer_list<const Tensor*> rows) {
  using namespace detail;
  check_float(op, "logits", logits);
  MT_CHECK(logits.dim() == 2, "{}: logits {} must be [N, V_local]", op, logits.str());
  MT_CHECK(vocab_start >= 0 && vocab > 0, "{}: vocab_start {} / vocab {}", op, vocab_start, vocab);
  for (const Tensor* t : rows) {
    if (!t) continue;
    check_dtype(op, "row tensor", *t, DType::F32);
    check_numel(op, "row tensor", *t, logits.size(0));
  }
  MT_CHECK(!on_cuda(op, {&logits}), "{}: the CUDA version of the vocab-parallel cross-entropy is not written yet", op);
}

}  // namespace

void vocab_parallel_ce_max(const Tensor& logits, int64_t vocab_start, int64_t vocab, const Tensor& row_max,
                           Stream) {
  check_common("vocab_parallel_ce_max", logits, vocab_start, vocab, {&row_max});
  cpu::vocab_parallel_ce_max(logits, vocab_start, vocab, row_max);
}

void vocab_parallel_ce_sum_exp(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                               const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit, Stream) {
  const char* op = "vocab_parallel_ce_sum_exp";
  check_common(op, logits, vocab_start, vocab, {&row_max, &sum_exp, &target_logit});
  detail::check_dtype(op, "targets", targets, DType::I32);
  detail::check_numel(op, "targets", targets, logits.size(0));
  cpu::vocab_parallel_ce_sum_exp(logits, targets, vocab_start, vocab, row_max, sum_exp, target_logit);
}

void vocab_parallel_ce_loss_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                                 const Tensor& losses, const Tensor* dloss, const Tensor* dlogits, Stream) {
  const char* op = "vocab_parallel_ce_loss_grad";
  check_common(op, logits, vocab_start, vocab, {&row_max, &sum_exp, &target_logit, &losses, dloss});
  detail::check_dtype(op, "targets", targets, DType::I32);
  detail::check_numel(op, "targets", targets, logits.size(0));
  if (dlogits) {
    MT_CHECK(dloss, "{}: dlogits needs dloss", op);
    detail::check_shape(op, "dlogits", *dlogits, logits.shape());
    MT_CHECK(dlogits->dtype() == logits.dtype(), "{}: dlogits {} must have logits' dtype", op, dlogits->str());
  }
  cpu::vocab_parallel_ce_loss_grad(logits, targets, vocab_start, vocab, row_max, sum_exp, target_logit, losses, dloss,
                                   dlogits);
}

}  // namespace mt
