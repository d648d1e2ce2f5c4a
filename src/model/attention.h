#pragma once
// SelfAttention (Megatron-Core's name): linear_qkv -> [q/k norm] -> [RoPE] -> causal core
// attention -> linear_proj.
// linear_qkv's output features are ordered [group, {q_0 .. q_{H/G-1}, k, v}, head_dim] (Megatron's
// layout for grouped-query attention; G = H gives [head, {q, k, v}, head_dim]), so its
// column-parallel split gives each tensor-parallel rank whole query groups (G / TP of them, with
// their H / TP query heads); linear_proj is row-parallel over the same heads.
#include <string>

#include "kernels/attention.h"
#include "model/context_parallel_attention.h"
#include "model/kv_cache.h"
#include "model/rotary.h"
#include "model/tensor_parallel.h"
#include "model/transformer_config.h"
#include "model/transformer_layer_spec.h"

namespace mt {

class SelfAttention {
 public:
  struct Saved {
    ColumnParallelLinear::Saved qkv_in;
    RowParallelLinear::Saved proj_in;
    Tensor qkv_pre_norm, qk_rstd;  // with q/k norm: linear_qkv's output and the heads' rstd
    Tensor qkv, out, lse;          // qkv: core attention's input (normed, rotated)
    AttentionConfig core;
    RotaryTables rope;
    // Context parallelism or document masks (ctx.positions): the tokens' places, and what the
    // exchange around core attention keeps for backward.
    TokenPositions positions;
    ContextParallelSaved cp;
  };
  SelfAttention(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                const SelfAttentionSpec& spec, const ModelParallelConfig& par = {});
  void init(float std, float out_std, uint64_t seed) const;
  // x: [B, T, C] (with sequence parallelism this rank's tokens, [B T / TP, C]) -> same shape.
  // rope: the angle tables when the spec has RoPE. With context parallelism (ctx.positions and a
  // context-parallel group) or documents (ctx.positions->document) core attention runs over the
  // whole sequence through context_parallel_attention.h.
  Tensor forward(const Tensor& x, const ForwardContext& ctx, uint64_t site, const RotaryTables* rope,
                 Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;
  // Selective recomputation of the layernorm before it: forward's input (the norm's output) is
  // dropped from saved, and put back from the recomputed norm before backward.
  void drop_input(Saved& saved) const { saved.qkv_in = {}; }
  void restore_input(const Tensor& x, Saved& saved) const { qkv_.restore_input(x, saved.qkv_in); }
  // Generation: x [B, T, C] holds T new tokens of each sequence (positions step.start[b] + t).
  // Their keys and values go into the layer's cache (k_cache, v_cache [B, S, G/TP, D]) and each
  // token attends to its sequence's cached prefix and itself. No dropout; nothing is saved.
  Tensor forward_inference(const Tensor& x, const InferenceStep& step, const Tensor& k_cache,
                           const Tensor& v_cache) const;

 private:
  TransformerConfig cfg_;
  SelfAttentionSpec spec_;
  ParamAndGradBuffer& buf_;
  ModelParallelConfig par_;
  int heads_, groups_;  // local: num_attention_heads / TP, query groups / TP
  int head_offset_;     // this rank's first query head
  // --recompute-modules core_attn: out and lse are dropped after forward and the core attention
  // reruns from the kept qkv before backward (the kernel is flash-style: it never stores the
  // [T, T] probabilities, so out, the projection's input, is what there is to save).
  bool recompute_core_;
  void core_forward(Saved& s) const;
  ColumnParallelLinear qkv_;
  ParamAndGradBuffer::Id q_norm_ = -1, k_norm_ = -1;
  RowParallelLinear proj_;
};

}  // namespace mt
