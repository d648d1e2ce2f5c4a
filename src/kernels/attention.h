#pragma once
// Causal multi-head self-attention, flash-style: scores are computed block by block with an
// online softmax and never stored as a [T, T] matrix; forward saves only the output and the
// per-row log-sum-exp, and backward recomputes the probabilities from them.
//
// qkv : [B, T, G, H/G + 2, D]  Megatron's per-query-group layout: for each of the G query groups,
//                        its H/G query heads, then its key head, then its value head, so a
//                        column-parallel split of the QKV projection keeps groups whole. Query
//                        head h reads the key and value heads of group h / (H/G) (grouped-query
//                        attention; G = H is multi-head attention, [B, T, H, 3, D]). K and V are
//                        never repeated in memory.
// out : [B, T, H, D]
// lse : fp32 [B, H, T]   logsumexp_j (q_i . k_j * scale), scale = cfg.scale() (1/sqrt(D) unless
//                        cfg.softmax_scale is set: multi-latent attention's zero-padded heads and
//                        YaRN's mscale^2 correction)
// FLOPs (causal): forward 2 * B*H*T*T*D, backward 5 * B*H*T*T*D (half of the dense 4 and 10).
//
// Attention dropout (p > 0) drops probabilities with the mask
//   philox(seed, stream, ((b'*H' + h')*T + i)*T + j),  b' = batch_offset + b,  h' = head_offset + h,
//   H' = total_heads (0: n_heads)
// in the sample's and head's global coordinates, so a data- or tensor-parallel rank draws the
// same mask as one rank holding everything (the same mask in forward and backward, regenerated,
// never stored).
#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace mt {

struct AttentionConfig {
  int n_heads = 1;  // query heads H (this rank's)
  int head_dim = 1;
  float dropout_p = 0.0f;
  uint64_t seed = 0;
  uint64_t stream = 0;
  // After the fields above so that the existing aggregate initialisations {H, D, p, seed, stream}
  // keep their meaning (a float in n_query_groups' place would not compile).
  int n_query_groups = 0;  // G, dividing H (0: H, multi-head attention)
  // The dropout mask's global coordinates (see above).
  int64_t batch_offset = 0;
  int head_offset = 0;
  int total_heads = 0;
  // The scores' factor, q . k * scale; 0: 1/sqrt(head_dim). Multi-latent attention sets it: its
  // q/k heads are zero-padded to the packed head size D, and YaRN multiplies it by mscale^2.
  float softmax_scale = 0.0f;

  // The exact expression every kernel used before softmax_scale existed (bit-identical default).
  float scale() const { return softmax_scale > 0.0f ? softmax_scale : 1.0f / std::sqrt(float(head_dim)); }
  int groups() const { return n_query_groups > 0 ? n_query_groups : n_heads; }
  int heads_per_group() const { return n_heads / groups(); }
  int mask_heads() const { return total_heads > 0 ? total_heads : n_heads; }
};

void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg,
                       Stream s = {});
// Writes dqkv (not accumulated).
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                        const Tensor& dqkv, const AttentionConfig& cfg, Stream s = {});

// Which implementation runs attention on CUDA tensors (ignored on CPU):
//  Auto   (default) cuDNN's fused flash attention (SDPA) where it applies -- bf16/fp16, dropout_p == 0,
//         a head size cuDNN supports, a build with cuDNN -- else the native kernel. Dropout > 0 always
//         runs the native kernel, so CUDA and CPU draw the same Philox mask.
//  Cudnn  cuDNN, and a case it cannot run is a UserError (no silent fallback; for tests).
//  Native the native kernel (fp32 math on CUDA cores), always.
// The environment variable MT_ATTENTION_BACKEND=auto|cudnn|native sets the initial choice.
enum class AttentionBackend : uint8_t { Auto, Cudnn, Native };
void set_attention_backend(AttentionBackend b);
AttentionBackend attention_backend();
// Whether cuDNN's backward must be bit-reproducible (Megatron's --deterministic-mode). Off by
// default, as in Megatron: cuDNN's default engine accumulates dQ with atomics (run-to-run
// differences of an ulp; 0.65 ms faster per GPT-124M step on an H200, and no B*H*T*T*2-byte
// workspace). On: the dP-workspace engine. The native kernel is deterministic either way.
// MT_ATTENTION_DETERMINISTIC=1|0 sets the initial value.
void set_attention_deterministic(bool on);
bool attention_deterministic();
// Whether cuDNN's attention builds every plan (engine configuration) its heuristic offers for a
// shape and keeps the fastest, timed on the shape's first call (kernels/cuda/autotune.h; another
// plan must beat the heuristic's by 3%). On by default; off, the heuristic's plan: which plan is
// timed fastest can change from run to run, so --deterministic-mode turns it off.
// MT_ATTENTION_AUTOTUNE=1|0 sets the initial value; read when a shape's graph is built.
void set_attention_autotune(bool on);
bool attention_autotune();
// Whether this build has the cuDNN path (MT_WITH_CUDNN).
bool attention_has_cudnn();

}  // namespace mt
