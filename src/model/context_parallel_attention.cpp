#include "model/context_parallel_attention.h"

#include <utility>

#include "core/error.h"
#include "kernels/attention_block.h"
#include "kernels/elementwise.h"

namespace mt {
namespace {

struct Shape5 {
  int64_t B, T, G, per, D;  // qkv [B, T, G, per = H/G + 2, D]
};
Shape5 shape_of(const Tensor& qkv) {
  MT_CHECK(qkv.dim() == 5, "context parallel attention: qkv {} must be [B, T, G, H/G + 2, D]", qkv.str());
  return {qkv.size(0), qkv.size(1), qkv.size(2), qkv.size(3), qkv.size(4)};
}

// Every context-parallel rank's [B, T] int32 tensor, as [C, B, T] (the rank's own with C = 1).
Tensor gather_ranks(const Tensor& t, Communicator* cp) {
  if (!t.defined()) return Tensor();
  const int C = cp ? cp->size() : 1;
  if (C == 1) return t.view({1, t.size(0), t.size(1)});
  Tensor all = Tensor::empty({C, t.size(0), t.size(1)}, t.dtype(), t.device());
  cp->all_gather(t, all);
  return all;
}

// Rank j's [B, T] slice of a gathered [C, B, T].
Tensor rank_slice(const Tensor& all, int j) {
  if (!all.defined()) return Tensor();
  const int64_t B = all.size(1), T = all.size(2);
  return all.flat_slice(int64_t(j) * B * T, B * T, {B, T});
}

AttentionMask mask_of(const TokenPositions& pos, const ContextParallelSaved& s, int key_rank) {
  AttentionMask m;
  m.q_pos = pos.seq_index;
  m.k_pos = rank_slice(s.seq_index, key_rank);
  m.q_doc = pos.document;
  m.k_doc = rank_slice(s.document, key_rank);
  m.seq = pos.seq;
  return m;
}

// [C, B, T, w] chunks (chunk j: rank j's T tokens of every sample) -> [B, C T, w] in rank order.
void chunks_to_sequence(const Tensor& chunks, const Tensor& seq, int C, int64_t B, int64_t T, int64_t w) {
  for (int j = 0; j < C; ++j) copy_2d(chunks, int64_t(j) * B * T * w, T * w, seq, int64_t(j) * T * w, C * T * w, T * w, B);
}
// The inverse: [B, C T, w] -> [C, B, T, w].
void sequence_to_chunks(const Tensor& seq, const Tensor& chunks, int C, int64_t B, int64_t T, int64_t w) {
  for (int j = 0; j < C; ++j) copy_2d(seq, int64_t(j) * T * w, C * T * w, chunks, int64_t(j) * B * T * w, T * w, T * w, B);
}
// [N, C w] rows -> [C, N, w]: chunk j holds every row's j-th slice of w (heads for rank j).
void split_columns(const Tensor& rows, const Tensor& chunks, int C, int64_t N, int64_t w) {
  for (int j = 0; j < C; ++j) copy_2d(rows, int64_t(j) * w, C * w, chunks, int64_t(j) * N * w, w, w, N);
}
// The inverse: [C, N, w] -> [N, C w].
void join_columns(const Tensor& chunks, const Tensor& rows, int C, int64_t N, int64_t w) {
  for (int j = 0; j < C; ++j) copy_2d(chunks, int64_t(j) * N * w, w, rows, int64_t(j) * w, C * w, w, N);
}

// The rank's query groups over the whole sequence ([B, T, G, per, D] -> [B, C T, G / C, per, D]).
Tensor tokens_to_heads(const Tensor& x, Communicator& cp) {
  const int C = cp.size();
  const int64_t B = x.size(0), T = x.size(1), G = x.size(2), w = x.numel() / (B * T * C);
  Tensor send = Tensor::empty({x.numel()}, x.dtype(), x.device()), recv = Tensor::empty({x.numel()}, x.dtype(), x.device());
  split_columns(x, send, C, B * T, w);
  cp.all_to_all(send, recv);
  Tensor out = Tensor::empty({B, C * T, G / C, x.size(3), x.size(4)}, x.dtype(), x.device());
  chunks_to_sequence(recv, out, C, B, T, w);
  return out;
}
// The inverse ([B, C T, G / C, per, D] -> [B, T, G, per, D]), written into `out`.
void heads_to_tokens(const Tensor& x, const Tensor& out, Communicator& cp) {
  const int C = cp.size();
  const int64_t B = out.size(0), T = out.size(1), w = x.numel() / (B * T * C);
  Tensor send = Tensor::empty({x.numel()}, x.dtype(), x.device()), recv = Tensor::empty({x.numel()}, x.dtype(), x.device());
  sequence_to_chunks(x, send, C, B, T, w);
  cp.all_to_all(send, recv);
  join_columns(recv, out, C, B * T, w);
}

// [C, B, T] int32 -> [B, C T] (every rank's tokens of a sample, in rank order).
Tensor ranks_to_sequence(const Tensor& all) {
  if (!all.defined()) return Tensor();
  const int C = int(all.size(0));
  const int64_t B = all.size(1), T = all.size(2);
  Tensor seq = Tensor::empty({B, C * T}, all.dtype(), all.device());
  chunks_to_sequence(all, seq, C, B, T, 1);
  return seq;
}

AttentionConfig heads_config(const AttentionConfig& core, int C, int r) {
  MT_CHECK(core.n_heads % C == 0 && core.groups() % C == 0,
           "a2a context parallelism: {} heads in {} query groups on this rank, not divisible by {} ranks", core.n_heads,
           core.groups(), C);
  AttentionConfig c = core;
  c.total_heads = core.mask_heads();  // the dropout mask's heads stay those of the whole layer
  c.n_heads = core.n_heads / C;
  c.n_query_groups = core.groups() / C;
  c.head_offset = core.head_offset + r * c.n_heads;
  return c;
}

void ring_forward(const Tensor& qkv, const Tensor& out, const AttentionConfig& core, const TokenPositions& pos,
                  const ModelParallelConfig& par, ContextParallelSaved& s) {
  const Shape5 d = shape_of(qkv);
  const int C = par.cp_size(), r = par.cp_rank();
  const int64_t H = core.n_heads;
  const Device dev = qkv.device();
  Tensor cur = Tensor::empty({d.B, d.T, d.G, 2, d.D}, qkv.dtype(), dev);
  attention_split_kv(qkv, cur);
  Tensor next = C > 1 ? Tensor::empty(cur.shape(), cur.dtype(), dev) : Tensor();
  Tensor out_acc = Tensor::empty({d.B, d.T, H, d.D}, DType::F32, dev);
  s.lse = Tensor::empty({d.B, H, d.T}, DType::F32, dev);
  Tensor out_blk, lse_blk;
  for (int i = 0; i < C; ++i) {
    std::unique_ptr<CommHandle> moving;
    if (i + 1 < C)
      moving = par.cp->batch_send_recv({{P2POp::Kind::Send, cur, (r + 1) % C}, {P2POp::Kind::Recv, next, (r + C - 1) % C}});
    const AttentionMask mask = mask_of(pos, s, (r + C - i) % C);
    if (i == 0) {
      attention_block_forward(qkv, cur, mask, out_acc, s.lse, core);
    } else {
      if (!out_blk.defined()) {
        out_blk = Tensor::empty(out_acc.shape(), DType::F32, dev);
        lse_blk = Tensor::empty(s.lse.shape(), DType::F32, dev);
      }
      attention_block_forward(qkv, cur, mask, out_blk, lse_blk, core);
      attention_lse_merge(out_acc, s.lse, out_blk, lse_blk);
    }
    if (moving) {
      moving->wait();
      std::swap(cur, next);
    }
  }
  cast(out_acc, out);
}

void ring_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& dqkv,
                   const AttentionConfig& core, const TokenPositions& pos, const ModelParallelConfig& par,
                   ContextParallelSaved& s) {
  const Shape5 d = shape_of(qkv);
  const int C = par.cp_size(), r = par.cp_rank();
  const Device dev = qkv.device();
  Tensor cur = Tensor::empty({d.B, d.T, d.G, 2, d.D}, qkv.dtype(), dev);
  attention_split_kv(qkv, cur);
  Tensor next = C > 1 ? Tensor::empty(cur.shape(), cur.dtype(), dev) : Tensor();
  Tensor dq = Tensor::zeros({d.B, d.T, core.n_heads, d.D}, DType::F32, dev);
  // The dK, dV accumulator of the key block this rank holds; it travels with the block and, after
  // C hops, arrives back at the block's owner.
  Tensor dkv = Tensor::zeros(cur.shape(), DType::F32, dev);
  Tensor dkv_next = C > 1 ? Tensor::empty(cur.shape(), DType::F32, dev) : Tensor();
  for (int i = 0; i < C; ++i) {
    attention_block_backward(dout, qkv, cur, out, s.lse, mask_of(pos, s, (r + C - i) % C), dq, dkv, core);
    if (C == 1) break;
    std::vector<P2POp> ops{{P2POp::Kind::Send, dkv, (r + 1) % C}, {P2POp::Kind::Recv, dkv_next, (r + C - 1) % C}};
    if (i + 1 < C) {
      ops.push_back({P2POp::Kind::Send, cur, (r + 1) % C});
      ops.push_back({P2POp::Kind::Recv, next, (r + C - 1) % C});
    }
    par.cp->batch_send_recv(ops)->wait();
    std::swap(dkv, dkv_next);
    if (i + 1 < C) std::swap(cur, next);
  }
  attention_pack_grads(dq, dkv, dqkv);
}

void a2a_forward(const Tensor& qkv, const Tensor& out, const AttentionConfig& core, const TokenPositions& pos,
                 const ModelParallelConfig& par, ContextParallelSaved& s) {
  Communicator& cp = *par.cp;
  const int C = cp.size();
  const AttentionConfig hc = heads_config(core, C, cp.rank());
  const Device dev = qkv.device();
  s.qkv_heads = tokens_to_heads(qkv, cp);
  const int64_t B = qkv.size(0), S = s.qkv_heads.size(1), D = qkv.size(4);
  Tensor kv = Tensor::empty({B, S, hc.groups(), 2, D}, qkv.dtype(), dev);
  attention_split_kv(s.qkv_heads, kv);
  const Tensor seq = ranks_to_sequence(s.seq_index), doc = ranks_to_sequence(s.document);
  const AttentionMask mask{seq, seq, doc, doc, pos.seq};
  Tensor o = Tensor::empty({B, S, hc.n_heads, D}, DType::F32, dev);
  s.lse = Tensor::empty({B, hc.n_heads, S}, DType::F32, dev);
  attention_block_forward(s.qkv_heads, kv, mask, o, s.lse, hc);
  s.out_heads = Tensor::empty(o.shape(), qkv.dtype(), dev);
  cast(o, s.out_heads);
  heads_to_tokens(s.out_heads.view({B, S, 1, hc.n_heads, D}), out.view({B, qkv.size(1), 1, core.n_heads, D}), cp);
}

void a2a_backward(const Tensor& dout, const Tensor& qkv, const Tensor& dqkv, const AttentionConfig& core,
                  const TokenPositions& pos, const ModelParallelConfig& par, ContextParallelSaved& s) {
  Communicator& cp = *par.cp;
  const int C = cp.size();
  const AttentionConfig hc = heads_config(core, C, cp.rank());
  const Device dev = qkv.device();
  const int64_t B = qkv.size(0), T = qkv.size(1), S = s.qkv_heads.size(1), D = qkv.size(4);
  const Tensor dout_heads = tokens_to_heads(dout.view({B, T, C, core.n_heads / C, D}), cp).view({B, S, hc.n_heads, D});
  Tensor kv = Tensor::empty({B, S, hc.groups(), 2, D}, qkv.dtype(), dev);
  attention_split_kv(s.qkv_heads, kv);
  const Tensor seq = ranks_to_sequence(s.seq_index), doc = ranks_to_sequence(s.document);
  const AttentionMask mask{seq, seq, doc, doc, pos.seq};
  Tensor dq = Tensor::zeros({B, S, hc.n_heads, D}, DType::F32, dev);
  Tensor dkv = Tensor::zeros(kv.shape(), DType::F32, dev);
  attention_block_backward(dout_heads, s.qkv_heads, kv, s.out_heads, s.lse, mask, dq, dkv, hc);
  Tensor dqkv_heads = Tensor::empty(s.qkv_heads.shape(), qkv.dtype(), dev);
  attention_pack_grads(dq, dkv, dqkv_heads);
  heads_to_tokens(dqkv_heads, dqkv, cp);
}

}  // namespace

void context_parallel_attention_forward(const Tensor& qkv, const Tensor& out, const AttentionConfig& core,
                                        const TokenPositions& pos, const ModelParallelConfig& par,
                                        ContextParallelSaved& s) {
  MT_CHECK(pos.defined(), "context parallel attention without the tokens' positions");
  s.seq_index = gather_ranks(pos.seq_index, par.cp);
  s.document = gather_ranks(pos.document, par.cp);
  if (par.cp_size() > 1 && par.cp_comm_type == CpCommType::A2A) return a2a_forward(qkv, out, core, pos, par, s);
  ring_forward(qkv, out, core, pos, par, s);
}

void context_parallel_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                         const Tensor& dqkv, const AttentionConfig& core, const TokenPositions& pos,
                                         const ModelParallelConfig& par, ContextParallelSaved& s) {
  if (par.cp_size() > 1 && par.cp_comm_type == CpCommType::A2A) {
    a2a_backward(dout, qkv, dqkv, core, pos, par, s);
  } else {
    ring_backward(dout, qkv, out, dqkv, core, pos, par, s);
  }
  s = ContextParallelSaved{};
}

}  // namespace mt
