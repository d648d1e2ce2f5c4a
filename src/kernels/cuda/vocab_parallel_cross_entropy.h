#pragma once
// CUDA implementations of kernels/vocab_parallel_cross_entropy.h (arguments checked by the
// dispatcher). Kept out of cuda_ops.h so the op family stays in its own files.
#include "core/tensor.h"

namespace mt::cuda {

void vocab_parallel_ce_max(const Tensor& logits, int64_t vocab_start, int64_t vocab, const Tensor& row_max, Stream s);
void vocab_parallel_ce_sum_exp(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                               const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit, Stream s);
void vocab_parallel_ce_loss_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                                 const Tensor& losses, const Tensor* dloss, const Tensor* dlogits, Stream s);

}  // namespace mt::cuda
