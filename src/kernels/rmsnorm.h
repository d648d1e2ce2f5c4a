#pragma once
// RMSNorm over the last dimension C of x [N, C] (Llama, Qwen, Mistral):
//   y = x * rstd * w,  rstd = 1/sqrt(mean(x^2) + eps)   (fp32 statistics)
// Forward saves rstd (fp32 [N]) for backward. Backward accumulates dw into an fp32 buffer (main
// grad) and writes dx:
//   xhat = x rstd,  g = dy w,  dx = rstd (g - xhat mean(g xhat)),  dw += sum_rows dy xhat
// Bytes: forward reads x once, writes y; backward reads dy, x once and writes dx.
#include "core/tensor.h"

namespace mt {

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd,
                     Stream s = {});
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                      const Tensor& dw_accum, Stream s = {});

// The pre-norm block's residual add fused into its RMSNorms, as layernorm.h's pair:
//   forward:  sum = x + r (rounded to x's dtype), y = RMSNorm(sum).   [add(x, r, sum); rmsnorm_forward(sum, ..)]
//             sum may alias x or r.
//   backward: dx = RMSNorm's dx + dres.                              [rmsnorm_backward(.., dx, ..); add(dx, dres, dx)]
//             dx may alias dy, not dres.
void add_rmsnorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& sum,
                         const Tensor& y, const Tensor& rstd, Stream s = {});
void rmsnorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dres,
                          const Tensor& dx, const Tensor& dw_accum, Stream s = {});

// Qwen 3's q/k norm (Megatron's qk_layernorm with RMSNorm) on the fused QKV projection's output
// qkv [B, T, G, Q/G + 2, D] (attention.h's layout: per query group its Q/G query heads, then its
// key head, then its value head): every query head's D values are RMS-normalised with q_w [D],
// every key head's with k_w [D]; value heads are copied. Out of place (backward needs qkv_in);
// rstd fp32 [B T G (Q/G + 1)], one per normalised head in memory order (q heads, then k, per group).
void qk_rmsnorm_forward(const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w, int n_query_groups, float eps,
                        const Tensor& qkv_out, const Tensor& rstd, Stream s = {});
// dqkv_out -> dqkv_in (value heads copied); accumulates dq_w, dk_w (fp32 [D]).
void qk_rmsnorm_backward(const Tensor& dqkv_out, const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w,
                         int n_query_groups, const Tensor& rstd, const Tensor& dqkv_in, const Tensor& dq_w_accum,
                         const Tensor& dk_w_accum, Stream s = {});

}  // namespace mt
