#pragma once
// Token (+ learned position) embedding.
//   out[b, t, :] = wte[ids[b, t] - vocab_start, :] + (wpe ? wpe[t, :] : 0)
// ids: int32 [B, T]; wte: [V_local, C]; wpe: [T_max, C] or null; out: [B, T, C], wte's dtype.
// A token outside [vocab_start, vocab_start + V_local) contributes zero (vocab-parallel shards).
// Backward accumulates into fp32 main grads, deterministically (each output row of dwte is
// summed in token order by one thread).
#include <cstdint>

#include "core/tensor.h"

namespace mt {

void embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor* wpe, int64_t vocab_start,
                       const Tensor& out, Stream s = {});
void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, const Tensor& dwte_accum,
                        const Tensor* dwpe_accum, Stream s = {});

}  // namespace mt
