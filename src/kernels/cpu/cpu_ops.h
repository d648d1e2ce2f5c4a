#pragma once
// The CPU implementations of the ops in src/kernels/*.h (same arguments, no stream). The
// dispatchers have checked the arguments; these only compute. OpenMP-parallel over independent
// outputs, so results are bit-identical for any thread count.
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "kernels/attention.h"
#include "kernels/attention_block.h"
#include "kernels/optimizer.h"

namespace mt::cpu {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha, float beta,
          const Tensor* bias);
std::vector<int64_t> gemm_workspace(int64_t m, int64_t n, int64_t k, DType in, DType out);
void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum);
void gemm_bias_gelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor* bias, const Tensor& pre,
                    const Tensor& y);
void gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre, const Tensor& dpre,
                const Tensor* db_accum);
void gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum,
                      float dw_beta);

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd);
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum);
void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd);
void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                            const Tensor& dres, const Tensor& dx, const Tensor& dw_accum, const Tensor& db_accum);

void gelu_forward(const Tensor& x, const Tensor& y);
void gelu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx);
void dropout_forward(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, uint64_t offset);
void dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream, uint64_t offset);

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                      const Tensor& dw_accum);
void add_rmsnorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& sum,
                         const Tensor& y, const Tensor& rstd);
void rmsnorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dres,
                          const Tensor& dx, const Tensor& dw_accum);
void qk_rmsnorm_forward(const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w, int n_query_groups, float eps,
                        const Tensor& qkv_out, const Tensor& rstd);
void qk_rmsnorm_backward(const Tensor& dqkv_out, const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w,
                         int n_query_groups, const Tensor& rstd, const Tensor& dqkv_in, const Tensor& dq_w_accum,
                         const Tensor& dk_w_accum);

void rope_forward(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim);
void rope_backward(const Tensor& dqkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim);

void moe_permute(const Tensor& x, const Tensor& row_source, int topk, const Tensor& out);
void moe_permute_backward(const Tensor& dout, const Tensor& row_map, int topk, const Tensor& dx);
void moe_unpermute(const Tensor& y, const Tensor& row_map, const Tensor& probs, const Tensor& out);
void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& row_map, const Tensor& row_source,
                            const Tensor& probs, const Tensor& dy, const Tensor& dprobs);
void swiglu_forward(const Tensor& x, const Tensor& y);
void swiglu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx);

void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg);
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& dqkv,
                        const AttentionConfig& cfg);
void attention_block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const Tensor& out,
                             const Tensor& lse, const AttentionConfig& cfg);
void attention_block_backward(const Tensor& dout, const Tensor& qkv, const Tensor& kv, const Tensor& out,
                              const Tensor& lse, const AttentionMask& mask, const Tensor& dq_acc,
                              const Tensor& dkv_acc, const AttentionConfig& cfg);
void attention_lse_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_blk, const Tensor& lse_blk);
void attention_split_kv(const Tensor& qkv, const Tensor& kv);
void attention_pack_grads(const Tensor& dq, const Tensor& dkv, const Tensor& dqkv);

void embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor* wpe, int64_t vocab_start, const Tensor& out);
void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, const Tensor& dwte_accum,
                        const Tensor* dwpe_accum);

void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab, const Tensor& losses,
                                    const Tensor* dloss, const Tensor* dlogits);

void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor* param_out,
                const AdamWParams& p);

void add(const Tensor& a, const Tensor& b, const Tensor& out);
void scale_(const Tensor& x, float alpha);
double sum_squares(const Tensor& x);
bool all_finite(const Tensor& x);
int64_t count_zeros(const Tensor& x);
void cast(const Tensor& src, const Tensor& dst);
void fill_normal(const Tensor& t, float std, uint64_t seed, uint64_t stream, int64_t index_offset);
void fill(const Tensor& t, float value);
void zero_ranges(const Tensor& t, const Tensor& ranges);
void copy_2d(const Tensor& src, int64_t src_offset, int64_t src_pitch, const Tensor& dst, int64_t dst_offset,
             int64_t dst_pitch, int64_t width, int64_t rows);

}  // namespace mt::cpu
