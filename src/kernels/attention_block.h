#pragma once
// Attention of a block of queries against a block of keys and values under an explicit mask in
// the full sequence's coordinates: the building block of context parallelism (ring attention runs
// it once per key/value block it receives and merges the partial results by their log-sum-exp;
// all-to-all attention runs it once over the whole sequence in the load-balanced token order) and
// of document masks (--reset-attention-mask).
//
// qkv  : [B, Tq, G, H/G + 2, D]  attention.h's packed layout; only the query heads are read
// kv   : [B, Tk, G, 2, D]        group g's key head, then its value head (qkv's dtype)
// mask : query i of sample b sees key j  iff  k_pos[b, j] <= q_pos[b, i]  and  k_doc[b, j] == q_doc[b, i]
//        (q_pos/k_pos: each token's index in the full sequence; q_doc/k_doc: its document, both
//        undefined for one document per sample)
// out  : fp32 [B, Tq, H, D]  the block's normalised output, softmax over the visible keys only
// lse  : fp32 [B, H, Tq]     log-sum-exp of the visible scores (scale 1/sqrt(D)); a query that
//                            sees no key of the block gets lse = -inf and a zero out row
// Dropout (cfg.dropout_p > 0) drops probabilities with attention.h's mask taken at the tokens'
// positions, philox(seed, stream, ((b' H' + h') S + q_pos) S + k_pos) with S = mask.seq, so a
// sequence split into blocks over context-parallel ranks draws the mask of one rank holding it.
//
// Backward takes the *merged* out (qkv's dtype, [B, Tq, H, D]) and lse of the query block (the
// final softmax's normaliser, so each block's probabilities are exact) and accumulates, in fp32:
//   dq_acc  [B, Tq, H, D]     += this key block's contribution to dQ
//   dkv_acc [B, Tk, G, 2, D]  += dK, dV of this key block from these queries
// Sums run in a fixed order on each device: results do not depend on the thread count.
// FLOPs: forward 4 B H Tq Tk D over visible pairs, backward 10 (half each when causal).
#include <cstdint>

#include "core/tensor.h"
#include "kernels/attention.h"

namespace mt {

struct AttentionMask {
  Tensor q_pos, k_pos;  // int32 [B, Tq], [B, Tk] on the tensors' device
  Tensor q_doc, k_doc;  // int32 [B, Tq], [B, Tk], or both undefined
  int64_t seq = 0;      // S, the full sequence length (dropout coordinates; positions < S)
};

void attention_block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const Tensor& out,
                             const Tensor& lse, const AttentionConfig& cfg, Stream s = {});
void attention_block_backward(const Tensor& dout, const Tensor& qkv, const Tensor& kv, const Tensor& out,
                              const Tensor& lse, const AttentionMask& mask, const Tensor& dq_acc,
                              const Tensor& dkv_acc, const AttentionConfig& cfg, Stream s = {});

// Merges a block's partial result into the running one, per query row:
//   lse' = log(e^lse_acc + e^lse_blk),  out_acc' = e^(lse_acc - lse') out_acc + e^(lse_blk - lse') out_blk
// (rows with lse = -inf contribute nothing; two -inf rows stay -inf with out 0). All fp32:
// out_acc, out_blk [B, Tq, H, D]; lse_acc, lse_blk [B, H, Tq].
void attention_lse_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_blk, const Tensor& lse_blk,
                         Stream s = {});

// kv[b, t, g, 0|1, :] = qkv's key | value head of group g (qkv [B, T, G, H/G + 2, D], kv [B, T, G, 2, D]).
void attention_split_kv(const Tensor& qkv, const Tensor& kv, Stream s = {});
// dqkv (its dtype) = the fp32 gradients in attention.h's packed layout: query heads from dq
// [B, T, H, D], key and value heads from dkv [B, T, G, 2, D]. Writes every element of dqkv.
void attention_pack_grads(const Tensor& dq, const Tensor& dkv, const Tensor& dqkv, Stream s = {});

}  // namespace mt
