#pragma once
// Vocabulary-parallel softmax cross-entropy (Megatron's vocab_parallel_cross_entropy), in three
// passes around two all-reduces over the tensor-parallel group; the logits are never gathered.
// logits: [N, Vl], this rank's columns = global vocabulary ids [vocab_start, vocab_start + Vl);
// ids >= vocab are padding and take no part. targets: int32 [N] global ids.
//   1. row_max[n] = max of the valid local logits             -> all-reduce max
//   2. sum_exp[n] = sum_v exp(x_v - row_max[n]) over valid v;
//      target_logit[n] = x[targets[n] - vocab_start] if this rank owns it, else 0
//                                                            -> all-reduce sum (both)
//   3. losses[n] = log(sum_exp[n]) + row_max[n] - target_logit[n];
//      dlogits[n, v] = dloss[n] * (exp(x_v - row_max[n]) / sum_exp[n] - [v == target]), 0 on
//      padding. dlogits may alias logits.
// row_max, sum_exp, target_logit, losses, dloss: fp32 [N]. Bytes: pass 1 and 2 read the logits
// once each, pass 3 reads them and writes the gradient once.
// CPU and CUDA implementations.
#include <cstdint>

#include "core/tensor.h"

namespace mt {

void vocab_parallel_ce_max(const Tensor& logits, int64_t vocab_start, int64_t vocab, const Tensor& row_max,
                           Stream s = {});
void vocab_parallel_ce_sum_exp(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                               const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                               Stream s = {});
void vocab_parallel_ce_loss_grad(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t vocab,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                                 const Tensor& losses, const Tensor* dloss, const Tensor* dlogits, Stream s = {});

}  // namespace mt
