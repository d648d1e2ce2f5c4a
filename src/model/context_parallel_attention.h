#pragma once
// Core attention over a sequence split across context-parallel ranks, and with document masks
// (Megatron-Core's / Transformer Engine's context parallelism; kernels/attention_block.h):
//
//  p2p (ring attention): the rank's key/value block goes around the ring of C ranks; at step i the
//    rank attends its queries to the block of rank (r - i) mod C while the next block is in flight,
//    and merges the partial outputs by their log-sum-exp. Backward passes the same blocks around
//    again with a travelling fp32 dK/dV accumulator, which after C hops is back at its owner:
//    dK, dV of a block are summed in the fixed rank order owner, owner + 1, ...
//  a2a (Ulysses): an all-to-all turns [B, S/C tokens, all query groups] into [B, S tokens in rank
//    order, G/C groups] (needs the rank's query groups divisible by C), attention runs over the
//    whole sequence for those heads, and a second all-to-all brings the output back.
// Either way the causal mask is taken from the tokens' sequence indices, not their order, so the
// load-balanced chunks need no reordering; documents mask across document boundaries. With C = 1
// (document masks alone) both are one call of the block kernel.
#include "comm/communicator.h"
#include "kernels/attention.h"
#include "model/parallel_config.h"
#include "model/token_positions.h"

namespace mt {

struct ContextParallelSaved {
  Tensor lse;        // fp32 [B, H, T] (a2a: [B, H / C, C T]), the merged softmax's normaliser
  Tensor qkv_heads;  // a2a: the rank's heads over the whole sequence, [B, C T, G / C, H/G + 2, D]
  Tensor out_heads;  // a2a: attention's output before the return all-to-all, [B, C T, H / C, D]
  Tensor seq_index, document;  // every rank's (a2a, and the ring's key blocks): [C, B, T] int32
};

// qkv: this rank's [B, T, G, H/G + 2, D] (normed and rotated); out: [B, T, H, D] in qkv's dtype
// (written). core: the heads, head size, dropout and its coordinates as for attention_forward.
void context_parallel_attention_forward(const Tensor& qkv, const Tensor& out, const AttentionConfig& core,
                                        const TokenPositions& pos, const ModelParallelConfig& par,
                                        ContextParallelSaved& saved);
// Writes dqkv [B, T, G, H/G + 2, D] from dout [B, T, H, D]; out is forward's.
void context_parallel_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                         const Tensor& dqkv, const AttentionConfig& core, const TokenPositions& pos,
                                         const ModelParallelConfig& par, ContextParallelSaved& saved);

}  // namespace mt
