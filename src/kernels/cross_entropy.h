#pragma once
// Fused softmax + cross-entropy over logits [N, Vp] (any float dtype). Only the first `vocab`
// columns take part; columns [vocab, Vp) are vocabulary padding and get zero gradient.
//   losses[n]     = logsumexp(logits[n, :vocab]) - logits[n, targets[n]]          (fp32 [N])
//   dlogits[n, v] = dloss[n] * (softmax(logits[n, :vocab])[v] - [v == targets[n]])
// The row's max and sum-exp come first, then the gradient is written; the probabilities are
// never stored (CUDA: the row is staged in shared memory where it fits, so DRAM sees one read). dlogits may alias logits (the gradient overwrites them).
// targets: int32 [N]. dloss: fp32 [N], the weight of each row's loss in the objective
// (loss mask / tokens / microbatches); null dlogits = forward only (evaluation).
#include <cstdint>

#include "core/tensor.h"

namespace mt {

void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab,
                                    const Tensor& losses, const Tensor* dloss, const Tensor* dlogits,
                                    Stream s = {});

}  // namespace mt
