// Dispatch and argument checks for attention_block.h.
#include "kernels/attention_block.h"

#include "kernels/attention_checks.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

using namespace detail;

// qkv [B, Tq, G, H/G + 2, D] and kv [B, Tk, G, 2, D] of one float dtype; the mask's positions
// int32 [B, Tq] / [B, Tk], its documents the same or both undefined, S > 0. Returns {B, Tq, Tk}.
struct BlockDims {
  int64_t B, Tq, Tk;
};
BlockDims check_block(const char* op, const Tensor& qkv, const Tensor& kv, const AttentionMask& mask,
                      const AttentionConfig& cfg) {
  check_attention_config(op, cfg);  // the head layout, as attention.h's
  check_float(op, "qkv", qkv);
  check_float(op, "kv", kv);
  MT_CHECK(kv.dtype() == qkv.dtype(), "{}: kv {} must have qkv's dtype {}", op, kv.str(), qkv.str());
  const int64_t H = cfg.n_heads, G = cfg.groups(), D = cfg.head_dim;
  MT_CHECK(qkv.dim() == 5, "{}: qkv {} must be [B, Tq, G, H/G + 2, D] = [B, Tq, {}, {}, {}]", op, qkv.str(), G,
           H / G + 2, D);
  MT_CHECK(kv.dim() == 5, "{}: kv {} must be [B, Tk, G, 2, D] = [B, Tk, {}, 2, {}]", op, kv.str(), G, D);
  const BlockDims d{qkv.size(0), qkv.size(1), kv.size(1)};
  check_shape(op, "qkv", qkv, {d.B, d.Tq, G, H / G + 2, D});
  check_shape(op, "kv", kv, {d.B, d.Tk, G, 2, D});
  check_dtype(op, "mask.q_pos", mask.q_pos, DType::I32);
  check_dtype(op, "mask.k_pos", mask.k_pos, DType::I32);
  check_shape(op, "mask.q_pos", mask.q_pos, {d.B, d.Tq});
  check_shape(op, "mask.k_pos", mask.k_pos, {d.B, d.Tk});
  MT_CHECK(mask.q_doc.defined() == mask.k_doc.defined(), "{}: mask.q_doc and mask.k_doc must be both defined or both "
           "undefined", op);
  if (mask.q_doc.defined()) {
    check_dtype(op, "mask.q_doc", mask.q_doc, DType::I32);
    check_dtype(op, "mask.k_doc", mask.k_doc, DType::I32);
    check_shape(op, "mask.q_doc", mask.q_doc, {d.B, d.Tq});
    check_shape(op, "mask.k_doc", mask.k_doc, {d.B, d.Tk});
  }
  MT_CHECK(mask.seq > 0, "{}: mask.seq (the full sequence length) must be positive, got {}", op, mask.seq);
  return d;
}

}  // namespace

void attention_block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const Tensor& out,
                             const Tensor& lse, const AttentionConfig& cfg, Stream s) {
  const char* op = "attention_block_forward";
  const BlockDims d = check_block(op, qkv, kv, mask, cfg);
  check_dtype(op, "out", out, DType::F32);
  check_dtype(op, "lse", lse, DType::F32);
  check_shape(op, "out", out, {d.B, d.Tq, cfg.n_heads, cfg.head_dim});
  check_shape(op, "lse", lse, {d.B, cfg.n_heads, d.Tq});
  if (on_cuda(op, {&qkv, &kv, &mask.q_pos, &mask.k_pos, &mask.q_doc, &mask.k_doc, &out, &lse}))
    MT_CUDA_CALL(attention_block_forward(qkv, kv, mask, out, lse, cfg, s));
  cpu::attention_block_forward(qkv, kv, mask, out, lse, cfg);
}

void attention_block_backward(const Tensor& dout, const Tensor& qkv, const Tensor& kv, const Tensor& out,
                              const Tensor& lse, const AttentionMask& mask, const Tensor& dq_acc,
                              const Tensor& dkv_acc, const AttentionConfig& cfg, Stream s) {
  const char* op = "attention_block_backward";
  const BlockDims d = check_block(op, qkv, kv, mask, cfg);
  const Shape rows{d.B, d.Tq, cfg.n_heads, cfg.head_dim};
  check_float(op, "dout", dout);
  check_float(op, "out", out);
  MT_CHECK(dout.dtype() == qkv.dtype() && out.dtype() == qkv.dtype(), "{}: dout {} and out {} must have qkv's dtype",
           op, dout.str(), out.str());
  check_shape(op, "dout", dout, rows);
  check_shape(op, "out", out, rows);
  check_dtype(op, "lse", lse, DType::F32);
  check_shape(op, "lse", lse, {d.B, cfg.n_heads, d.Tq});
  check_dtype(op, "dq_acc", dq_acc, DType::F32);
  check_shape(op, "dq_acc", dq_acc, rows);
  check_dtype(op, "dkv_acc", dkv_acc, DType::F32);
  check_shape(op, "dkv_acc", dkv_acc, kv.shape());
  if (on_cuda(op, {&dout, &qkv, &kv, &out, &lse, &mask.q_pos, &mask.k_pos, &mask.q_doc, &mask.k_doc, &dq_acc,
                   &dkv_acc}))
    MT_CUDA_CALL(attention_block_backward(dout, qkv, kv, out, lse, mask, dq_acc, dkv_acc, cfg, s));
  cpu::attention_block_backward(dout, qkv, kv, out, lse, mask, dq_acc, dkv_acc, cfg);
}

void attention_lse_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_blk, const Tensor& lse_blk,
                         Stream s) {
  const char* op = "attention_lse_merge";
  check_dtype(op, "out_acc", out_acc, DType::F32);
  check_dtype(op, "lse_acc", lse_acc, DType::F32);
  check_dtype(op, "out_blk", out_blk, DType::F32);
  check_dtype(op, "lse_blk", lse_blk, DType::F32);
  MT_CHECK(out_acc.dim() == 4, "{}: out_acc {} must be [B, Tq, H, D]", op, out_acc.str());
  const int64_t B = out_acc.size(0), Tq = out_acc.size(1), H = out_acc.size(2);
  check_shape(op, "out_blk", out_blk, out_acc.shape());
  check_shape(op, "lse_acc", lse_acc, {B, H, Tq});
  check_shape(op, "lse_blk", lse_blk, {B, H, Tq});
  if (on_cuda(op, {&out_acc, &lse_acc, &out_blk, &lse_blk}))
    MT_CUDA_CALL(attention_lse_merge(out_acc, lse_acc, out_blk, lse_blk, s));
  cpu::attention_lse_merge(out_acc, lse_acc, out_blk, lse_blk);
}

void attention_split_kv(const Tensor& qkv, const Tensor& kv, Stream s) {
  const char* op = "attention_split_kv";
  check_float(op, "qkv", qkv);
  check_float(op, "kv", kv);
  MT_CHECK(qkv.dim() == 5 && qkv.size(3) >= 3, "{}: qkv {} must be [B, T, G, H/G + 2, D]", op, qkv.str());
  MT_CHECK(kv.dtype() == qkv.dtype(), "{}: kv {} must have qkv's dtype {}", op, kv.str(), qkv.str());
  check_shape(op, "kv", kv, {qkv.size(0), qkv.size(1), qkv.size(2), 2, qkv.size(4)});
  if (on_cuda(op, {&qkv, &kv})) MT_CUDA_CALL(attention_split_kv(qkv, kv, s));
  cpu::attention_split_kv(qkv, kv);
}

void attention_pack_grads(const Tensor& dq, const Tensor& dkv, const Tensor& dqkv, Stream s) {
  const char* op = "attention_pack_grads";
  check_dtype(op, "dq", dq, DType::F32);
  check_dtype(op, "dkv", dkv, DType::F32);
  check_float(op, "dqkv", dqkv);
  MT_CHECK(dqkv.dim() == 5 && dqkv.size(3) >= 3, "{}: dqkv {} must be [B, T, G, H/G + 2, D]", op, dqkv.str());
  const int64_t B = dqkv.size(0), T = dqkv.size(1), G = dqkv.size(2), D = dqkv.size(4);
  check_shape(op, "dq", dq, {B, T, G * (dqkv.size(3) - 2), D});
  check_shape(op, "dkv", dkv, {B, T, G, 2, D});
  if (on_cuda(op, {&dq, &dkv, &dqkv})) MT_CUDA_CALL(attention_pack_grads(dq, dkv, dqkv, s));
  cpu::attention_pack_grads(dq, dkv, dqkv);
}

}  // namespace mt
