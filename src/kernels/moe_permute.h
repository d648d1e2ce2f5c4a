#pragma once
// Token permutation for Mixture of Experts (Megatron-Core's permute / unpermute): the tokens a
// router sent to each expert are gathered into one buffer sorted by expert, and the experts'
// outputs are scattered back and summed with the routing probabilities.
//
// A routing plan (built by the dispatcher) maps both ways between token choices and rows of the
// permuted buffer [R, C]:
//   row_map    int32 [N k]: choice s of token t (slot t k + s) -> its row, or -1 (dropped);
//   row_source int32 [R]:   row r -> the slot t k + s it holds, or -1 (padding to capacity).
// Every mapped row appears once in row_map. All sums run over s = 0..k-1 in order with fp32
// accumulation and one rounding, so results do not depend on the thread count or device.
// Bytes: each op reads and writes its [R, C] and [N, C] buffers once (unpermute_backward: twice R C).
#include "core/tensor.h"

namespace mt {

// out[r] = x[row_source[r] / k], or 0 for padding rows.  x [N, C], out [R, C] (x's dtype).
void moe_permute(const Tensor& x, const Tensor& row_source, int topk, const Tensor& out, Stream s = {});
// dx[t] = sum_s dout[row_map[t k + s]] (dropped choices add nothing).  dout [R, C], dx [N, C].
void moe_permute_backward(const Tensor& dout, const Tensor& row_map, int topk, const Tensor& dx, Stream s = {});
// out[t] = sum_s probs[t, s] y[row_map[t k + s]].  y [R, C], probs fp32 [N, k], out [N, C] (y's dtype).
void moe_unpermute(const Tensor& y, const Tensor& row_map, const Tensor& probs, const Tensor& out, Stream s = {});
// Its backward: dy[r] = probs[t, s] dout[t] for r = row_map[t k + s] (0 for padding rows), and
// dprobs[t, s] = <dout[t], y[row_map[t k + s]]> in fp32 (0 when dropped).
// dout [N, C], y [R, C], dy [R, C] (y's dtype), dprobs fp32 [N, k].
void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& row_map, const Tensor& row_source,
                            const Tensor& probs, const Tensor& dy, const Tensor& dprobs, Stream s = {});

}  // namespace mt
