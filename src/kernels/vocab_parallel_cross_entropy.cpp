// Dispatch and argument checks for vocab_parallel_cross_entropy.h.
#include "kernels/vocab_parallel_cross_entropy.h"

#include <vector>

#include "kernels/cpu/vocab_parallel_cross_entropy.h"
#include "kernels/dispatch.h"
#ifdef MT_WITH_CUDA
#include "kernels/cuda/vocab_parallel_cross_entropy.h"
#endif

namespace mt {
namespace {

// Returns whether the tensors are on a CUDA device.
bool check_common(const char* op, const Tensor& logits, int64_t vocab_start, int64_t vocab,
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
  std::vector<const Tensor*> all{&logits};
  all.insert(all.end(), rows.begin(), rows.end());
  bool any_gpu = false;
  for (const Tensor* t : all)
    if (t && t->defined()) any_gpu = any_gpu || t->is_cuda();
  for (const Tensor* t : all)
    if (t && t->defined()) MT_CHECK(t->device() == logits.device(), "{}: tensors on different devices", op);
#ifndef MT_WITH_CUDA
  MT_CHECK(!any_gpu, "{}: CUDA tensor, but this build has no CUDA backend", op);
#endif
  return any_gpu;
}

}  // namespace

void vocab_parallel_ce_max(const Tensor& logits, int64_t vocab_start, int64_t vocab, const Tensor& row_max,
                           [[maybe_unused]] Stream s) {
#ifdef MT_WITH_CUDA
  if (check_common("vocab_parallel_ce_max", logits, vocab_start, vocab, {&row_max}))
    return cuda::vocab_parallel_ce_max(logits, vocab_start, vocab, row_max, s);
#else
  check_common("vocab_parallel_ce_max", logits, vocab_start, vocab, {&row_max});
#endif
  cpu::vocab_parallel_ce_max(logits, vocab_start, vocab, row_max);
}

void vocab_parallel_ce_sum_exp(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                               const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                               [[maybe_unused]] Stream s) {
  const char* op = "vocab_parallel_ce_sum_exp";
  const bool on_gpu = check_common(op, logits, vocab_start, vocab, {&row_max, &sum_exp, &target_logit});
  detail::check_dtype(op, "targets", targets, DType::I32);
  detail::check_numel(op, "targets", targets, logits.size(0));
  MT_CHECK(targets.device() == logits.device(), "{}: targets on another device than the logits", op);
#ifdef MT_WITH_CUDA
  if (on_gpu) return cuda::vocab_parallel_ce_sum_exp(logits, targets, vocab_start, vocab, row_max, sum_exp, target_logit, s);
#else
  (void)on_gpu;
#endif
  cpu::vocab_parallel_ce_sum_exp(logits, targets, vocab_start, vocab, row_max, sum_exp, target_logit);
}

void vocab_parallel_ce_loss_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                                 const Tensor& losses, const Tensor* dloss, const Tensor* dlogits,
                                 [[maybe_unused]] Stream s) {
  const char* op = "vocab_parallel_ce_loss_grad";
  const bool on_gpu = check_common(op, logits, vocab_start, vocab, {&row_max, &sum_exp, &target_logit, &losses, dloss});
  detail::check_dtype(op, "targets", targets, DType::I32);
  detail::check_numel(op, "targets", targets, logits.size(0));
  MT_CHECK(targets.device() == logits.device(), "{}: targets on another device than the logits", op);
  if (dlogits) {
    MT_CHECK(dloss, "{}: dlogits needs dloss", op);
    detail::check_shape(op, "dlogits", *dlogits, logits.shape());
    MT_CHECK(dlogits->dtype() == logits.dtype(), "{}: dlogits {} must have logits' dtype", op, dlogits->str());
  }
#ifdef MT_WITH_CUDA
  if (on_gpu)
    return cuda::vocab_parallel_ce_loss_grad(logits, targets, vocab_start, vocab, row_max, sum_exp, target_logit,
                                             losses, dloss, dlogits, s);
#else
  (void)on_gpu;
#endif
  cpu::vocab_parallel_ce_loss_grad(logits, targets, vocab_start, vocab, row_max, sum_exp, target_logit, losses, dloss,
                                   dlogits);
}

}  // namespace mt
