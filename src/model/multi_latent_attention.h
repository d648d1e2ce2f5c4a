#pragma once
// MLASelfAttention (Megatron-Core's multi-latent attention, DeepSeek-V2/V3): queries and keys/values
// through low-rank latents, the keys' RoPE part shared by all heads. With Lq = q_lora_rank,
// Lkv = kv_lora_rank, Dn = qk_head_dim, R = qk_pos_emb_head_dim, Dv = v_head_dim, per token x [C]:
//   q   = linear_q_up_proj(q_layernorm(linear_q_down_proj(x)))    [H, Dn + R]  (Lq > 0)
//       = linear_q_proj(x)                                        [H, Dn + R]  (Lq = 0)
//   [c_kv | k_pe] = linear_kv_down_proj(x)                        [Lkv + R]
//   [k_nope | v]  = linear_kv_up_proj(kv_layernorm(c_kv))         [H, Dn + Dv]
//   query_h = [q_nope_h | rope(q_pe_h)],  key_h = [k_nope_h | rope(k_pe)],  value_h = v_h
//   out = linear_proj(causal_softmax(query key^T * scale) value)  scale = mscale^2 / sqrt(Dn + R)
// (the norms are RMSNorms present with --qk-layernorm, as in Megatron's spec; mscale is YaRN's
// mscale(s, mscale_all_dim), 1 without YaRN; rope as rotary.h's tables, YaRN's included).
//
// Core attention runs attention.h's kernels on the packed [B, T, H, 3, D] layout with
// D = max(Dn + R, Dv): each head stores [rope part | nope part] (a permutation of the channels
// shared by query and key leaves q . k unchanged, and puts the rotated channels first, where
// rope.h rotates them), the value zero-padded to D; the output's padded columns are dropped. The
// explicit softmax scale keeps the padding out of the scores' scale.
//
// Tensor parallelism splits heads: linear_q_proj / linear_q_up_proj / linear_kv_up_proj are
// column-parallel, linear_proj row-parallel; the down projections and norms are replicated and run
// on the layer's input tokens. Without sequence parallelism the up projections' backward all-reduces
// the latents' gradients, so the replicated grads are whole on every rank; with it each rank holds
// its share of the tokens, so their grads are partial sums over TP, reduced like the layer norms'.
// k_pe (no up projection) is all-gathered under sequence parallelism, and its gradient, each rank's
// heads' share, all-reduced (reduce-scattered) over TP.
//
// Costs of this first version: the value heads padded to D spend (D - Dv) / D of the P V product on
// zeros (cuDNN can take Dv != Dq directly), and k_pe is copied into, and its gradient summed out
// of, each head with one small copy per head. Context parallelism and document masks run core attention through
// context_parallel_attention.h, as SelfAttention does.
#include <memory>
#include <string>

#include "kernels/attention.h"
#include "model/context_parallel_attention.h"
#include "model/norm.h"
#include "model/rotary.h"
#include "model/tensor_parallel.h"
#include "model/transformer_config.h"
#include "model/transformer_layer_spec.h"

namespace mt {

// mscale(s, mscale_all_dim)^2 / sqrt(qk_head_dim + qk_pos_emb_head_dim) (mscale 1 without YaRN).
float mla_softmax_scale(const TransformerConfig& cfg);

class MLASelfAttention {
 public:
  struct Saved {
    ColumnParallelLinear::Saved q_down_in, q_up_in, kv_down_in, kv_up_in;  // q_up_in: linear_q_proj's without q LoRA
    Norm::Saved q_norm, kv_norm;
    RowParallelLinear::Saved proj_in;
    Tensor qkv, out, lse;  // core attention's packed input (rotated), output, log-sum-exp
    AttentionConfig core;
    RotaryTables rope;
    TokenPositions positions;
    ContextParallelSaved cp;
  };
  MLASelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                   const SelfAttentionSpec& spec, const ModelParallelConfig& par = {});
  void init(float std, float out_std, uint64_t seed) const;
  // As SelfAttention::forward / backward: x [B, T, C] (with sequence parallelism [B T / TP, C]).
  Tensor forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, const RotaryTables* rope,
                 Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;
  // Selective recomputation of the layernorm before it (as SelfAttention's): the down projections'
  // (or linear_q_proj's) saved input, the norm's output, is dropped and put back before backward.
  void drop_input(Saved& saved) const;
  void restore_input(const Tensor& x, Saved& saved) const;

 private:
  int packed_dim() const;  // D
  // Core attention from s.qkv into s.out (and lse or the context-parallel exchange's state).
  void core_forward(Saved& s) const;

  TransformerConfig cfg_;
  ModelParallelConfig par_;
  int heads_, head_offset_;  // this rank's query heads and its first
  // --recompute-modules core_attn: out, lse and linear_proj's input are dropped after forward and
  // core attention reruns from the kept packed qkv before backward (as SelfAttention's).
  bool recompute_core_;
  std::unique_ptr<ColumnParallelLinear> q_down_, q_up_;  // q_up_: linear_q_up_proj, or linear_q_proj
  std::unique_ptr<Norm> q_norm_, kv_norm_;
  ColumnParallelLinear kv_down_, kv_up_;
  RowParallelLinear proj_;
};

}  // namespace mt
