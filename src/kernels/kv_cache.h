#pragma once
// Attention over a key/value cache, for generation (one op family: the cache write and the
// attention that reads it).
//
// qkv     : [B, T, G, H/G + 2, D]  this step's tokens in attention.h's per-group layout (queries
//           already normed and rotated): T new tokens of each of B sequences.
// k_cache,
// v_cache : [B, S, G, D]  per sequence, S slots of the key and value head of each query group,
//           qkv's dtype. Slot j holds the token at position j of the sequence.
// start   : int32 [B], on the tensors' device: how many tokens sequence b held before this step,
//           so token t of sequence b sits at position start[b] + t. The caller guarantees
//           start[b] + T <= S (slots past S are never written or read).
//
// kv_cache_append: k_cache[b, start[b] + t, g] = key head of (b, t, g); the same for values.
// kv_cache_attention: out[b, t, h] = sum_{j <= start[b] + t} softmax_j(q . k_j / sqrt(D)) v_j for
//   query head h of token (b, t), with k_j, v_j from slot j of group h / (H/G) of sequence b's
//   cache: causal attention of every new token over its sequence's cached prefix and itself
//   (append first). T = 1 is a decode step; T > 1 with start 0 is a prefill (the causal training
//   kernel, attention.h, computes the same there); T > 1 with start > 0 continues a sequence.
//   Rows of sequences shorter than T (right padding) are computed like the others and ignored by
//   the caller. No dropout (AttentionConfig's dropout_p must be 0).
//   Bytes: reads every query once and each sequence's cached prefix once per query group and
//   token; no [T, S] score matrix is stored.
#include "core/tensor.h"
#include "kernels/attention.h"

namespace mt {

void kv_cache_append(const Tensor& qkv, const Tensor& start, const Tensor& k_cache, const Tensor& v_cache,
                     Stream s = {});
void kv_cache_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                        const Tensor& out, const AttentionConfig& cfg, Stream s = {});

}  // namespace mt
