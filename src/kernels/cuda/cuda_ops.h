#pragma once
// The CUDA implementations of the ops declared in src/kernels/*.h, one per public op and with
// the same signature. The dispatchers in src/kernels/*.cpp have already checked shapes, dtypes,
// contiguity and that all tensors live on one CUDA device; these run the op on stream `s`.
// Compiled only when the CUDA backend is built (MT_WITH_CUDA).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/attention.h"        // AttentionConfig
#include "kernels/attention_block.h"  // AttentionMask
#include "kernels/optimizer.h"        // AdamWParams

namespace mt::cuda {

// gemm.h
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha,
          float beta, const Tensor* bias, Stream s);
void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum, Stream s);
bool gemm_bias_gelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor* bias,
                    const Tensor& pre, const Tensor& y, Stream s);
bool gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre,
                const Tensor& dpre, const Tensor* db_accum, Stream s);
bool gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum,
                      float dw_beta, Stream s);

// grouped_gemm.h: one grouped launch per call. Each returns false, having launched nothing,
// where it has no grouped kernel for the case (dtypes, alignment, sizes); the dispatcher then
// runs one gemm per group.
bool grouped_gemm_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& y,
                          Stream s);
bool grouped_gemm_dgrad(const Tensor& dy, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& dx,
                        Stream s);
bool grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const std::vector<int64_t>& counts, const Tensor& dw,
                        float beta, Stream s);

// layernorm.h
void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y,
                       const Tensor& mean, const Tensor& rstd, Stream s);
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dx, const Tensor& dw_accum,
                        const Tensor& db_accum, Stream s);
void add_layernorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                           const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd, Stream s);
void layernorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                            const Tensor& rstd, const Tensor& dres, const Tensor& dx, const Tensor& dw_accum,
                            const Tensor& db_accum, Stream s);

// activation.h
void gelu_forward(const Tensor& x, const Tensor& y, Stream s);
void gelu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s);
void dropout_forward(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, Stream s,
                     uint64_t offset);
void dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream, Stream s,
                      uint64_t offset);

// rmsnorm.h
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd, Stream s);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dx,
                      const Tensor& dw_accum, Stream s);
void add_rmsnorm_forward(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& sum,
                         const Tensor& y, const Tensor& rstd, Stream s);
void rmsnorm_backward_add(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dres,
                          const Tensor& dx, const Tensor& dw_accum, Stream s);
void qk_rmsnorm_forward(const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w, int n_query_groups, float eps,
                        const Tensor& qkv_out, const Tensor& rstd, Stream s);
void qk_rmsnorm_backward(const Tensor& dqkv_out, const Tensor& qkv_in, const Tensor& q_w, const Tensor& k_w,
                         int n_query_groups, const Tensor& rstd, const Tensor& dqkv_in, const Tensor& dq_w_accum,
                         const Tensor& dk_w_accum, Stream s);

// rope.h
void rope_forward(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim, Stream s);
void rope_backward(const Tensor& dqkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim,
                   Stream s);

// swiglu.h
void swiglu_forward(const Tensor& x, const Tensor& y, Stream s);
void swiglu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s);

// moe_permute.h
void moe_permute(const Tensor& x, const Tensor& row_source, int topk, const Tensor& out, Stream s);
void moe_permute_backward(const Tensor& dout, const Tensor& row_map, int topk, const Tensor& dx, Stream s);
void moe_unpermute(const Tensor& y, const Tensor& row_map, const Tensor& probs, const Tensor& out, Stream s);
void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& row_map, const Tensor& row_source,
                            const Tensor& probs, const Tensor& dy, const Tensor& dprobs, Stream s);

// attention.h
void attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg,
                       Stream s);
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                        const Tensor& dqkv, const AttentionConfig& cfg, Stream s);
// attention_block.h (attention_block.cu)
void attention_block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const Tensor& out,
                             const Tensor& lse, const AttentionConfig& cfg, Stream s);
void attention_block_backward(const Tensor& dout, const Tensor& qkv, const Tensor& kv, const Tensor& out,
                              const Tensor& lse, const AttentionMask& mask, const Tensor& dq_acc,
                              const Tensor& dkv_acc, const AttentionConfig& cfg, Stream s);
void attention_lse_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_blk, const Tensor& lse_blk,
                         Stream s);
void attention_split_kv(const Tensor& qkv, const Tensor& kv, Stream s);
void attention_pack_grads(const Tensor& dq, const Tensor& dkv, const Tensor& dqkv, Stream s);
#ifdef MT_WITH_CUDNN
// attention_cudnn.cpp: cuDNN's fused flash attention for the same contract (lse included). Each
// returns false, having done nothing and said why in *why, where cuDNN does not apply (fp32,
// dropout > 0, a head size or shape cuDNN rejects); the caller then runs the native kernel.
bool cudnn_attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg,
                             Stream s, std::string* why);
bool cudnn_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                              const Tensor& dqkv, const AttentionConfig& cfg, Stream s, std::string* why);
#endif

// embedding.h
void embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor* wpe, int64_t vocab_start,
                       const Tensor& out, Stream s);
void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, const Tensor& dwte_accum,
                        const Tensor* dwpe_accum, Stream s);

// cross_entropy.h
void cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets, int64_t vocab,
                                    const Tensor& losses, const Tensor* dloss, const Tensor* dlogits,
                                    Stream s);

// optimizer.h
void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                const Tensor* param_out, const AdamWParams& p, Stream s);
void adamw_step_ranges(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                       const Tensor* param_out, const std::vector<AdamWRange>& ranges, const AdamWParams& p,
                       Stream s);

// elementwise.h
void add(const Tensor& a, const Tensor& b, const Tensor& out, Stream s);
void scale_(const Tensor& x, float alpha, Stream s);
double sum_squares(const Tensor& x, Stream s);
bool all_finite(const Tensor& x, Stream s);
int64_t count_zeros(const Tensor& x, Stream s);
void cast(const Tensor& src, const Tensor& dst, Stream s);
void fill_normal(const Tensor& t, float std, uint64_t seed, uint64_t stream, int64_t index_offset, Stream s);
void fill(const Tensor& t, float value, Stream s);
void zero_ranges(const Tensor& t, const Tensor& ranges, Stream s);
void copy_2d(const Tensor& src, int64_t src_offset, int64_t src_pitch, const Tensor& dst, int64_t dst_offset,
             int64_t dst_pitch, int64_t width, int64_t rows, Stream s);

}  // namespace mt::cuda
