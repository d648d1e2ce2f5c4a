#include "train/flops.h"

namespace mt {

// Megatron's num_floating_point_operations per token (forward + backward = 3 x 2 FLOPs per
// multiply-add): per layer the QKV and output projections 12 h (H D + G D) ... written out:
//   6 (2 h (H + G) D)          linear_qkv (h -> (H + 2G) D) and linear_proj (H D -> h)
//   12 s H D                   scores and their product with V, counted dense as the GPT benchmarks
//                              and Megatron-LM before 2025 do (its newer count halves it for the
//                              causal mask)
//   6 (2 h F) (3/2 if gated)   linear_fc1 (two halves when gated) and linear_fc2
// and the output layer 6 h Vp. An MoE layer's MLP counts the experts a token uses: top-k experts
// of width moe_ffn plus the shared experts, and the router 6 h E. Multi-latent attention counts its
// projections' weights (q: h Lq + Lq H Dq, or h H Dq; kv: h (Lkv + R) + Lkv H (Dn + Dv); out:
// H Dv h) and 6 s H (Dq + Dv) for the scores (Dq = Dn + R) and their product with V.
double flops_per_token(const TransformerConfig& c) {
  const double h = c.hidden_size, s = c.seq_length, D = c.head_dim(), H = c.num_attention_heads,
               G = c.query_groups(), F = c.ffn_hidden_size, gated = c.gated_linear_unit ? 1.5 : 1.0;
  double attention = 12.0 * h * (H + G) * D + 12.0 * s * H * D;
  if (c.multi_latent_attention) {
    const double Lq = c.q_lora_rank, L = c.kv_lora_rank, Dn = c.qk_head_dim, R = c.qk_pos_emb_head_dim,
                 Dv = c.v_head_dim, Dq = Dn + R;
    const double q = Lq > 0 ? h * Lq + Lq * H * Dq : h * H * Dq;
    attention = 6.0 * (q + h * (L + R) + L * H * (Dn + Dv) + H * Dv * h) + 6.0 * s * H * (Dq + Dv);
  }
  const double dense_mlp = 12.0 * h * F * gated;
  const double moe_mlp = 12.0 * h * gated *
                             (double(c.moe_router_topk) * c.moe_ffn_size() + c.moe_shared_expert_intermediate_size) +
                         6.0 * h * c.num_moe_experts;
  double layers = 0;
  for (int l = 0; l < c.num_layers; ++l) layers += attention + (c.is_moe_layer(l) ? moe_mlp : dense_mlp);
  return layers + 6.0 * h * double(c.padded_vocab_size);
}

}  // namespace mt
