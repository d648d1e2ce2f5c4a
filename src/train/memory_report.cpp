#include "train/memory_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "comm/communicator.h"
#include "core/allocator.h"
#include "kernels/gemm.h"

namespace mt {
namespace {

// The sizes one microbatch's tensors have on this rank. N: the tokens a layer's GEMMs see
// (micro x seq / CP); n: the rows of the hidden states between them (N / TP under sequence
// parallelism).
struct Counter {
  const TransformerConfig& c;
  const MemoryLayout& l;
  int64_t e, N, n, C, tp;
  Counter(const TransformerConfig& cfg, const MemoryLayout& lay)
      : c(cfg),
        l(lay),
        e(int64_t(dtype_size(cfg.params_dtype))),
        N(int64_t(lay.micro_batch_size) * cfg.seq_length / std::max(lay.cp, 1)),
        n(lay.sequence_parallel && lay.tp > 1 ? N / lay.tp : N),
        C(cfg.hidden_size),
        tp(lay.tp) {}
  // A tensor of `bytes`, as the allocator will hand it out.
  int64_t t(int64_t bytes) const {
    if (bytes <= 0) return 0;
    return l.host_blocks ? int64_t(host_block_bytes(size_t(bytes))) : bytes;
  }
  int64_t act(int64_t rows, int64_t cols) const { return t(rows * cols * e); }
  int64_t f32(int64_t count) const { return t(count * 4); }
  bool sp() const { return l.sequence_parallel && l.tp > 1; }

  // A norm's statistics (LayerNorm: mean and rstd; RMSNorm: rstd), fp32 per row.
  int64_t norm_stats() const { return f32(n) * (c.normalization == Normalization::LayerNorm ? 2 : 1); }

  // A dense MLP's Saved of width f: fc1's input (the norm's output, gathered under sequence
  // parallelism; `input` false when it is counted elsewhere or dropped), fc1's output and the
  // activation's output (unless recomputed).
  int64_t mlp(int64_t f, bool input, bool act_recomputed) const {
    const int64_t f1 = (c.gated_linear_unit ? 2 : 1) * f;
    return (input ? act(N, C) : 0) + act(N, f1 / tp) + (act_recomputed ? 0 : act(N, f / tp));
  }

  // SelfAttention's Saved: linear_qkv's input (ln1's output, gathered under SP), qkv (and its
  // pre-norm copy and statistics with q/k norm), core attention's output (linear_proj's input) and
  // log-sum-exp.
  int64_t attention(const RecomputeModules& rm) const {
    int64_t b = rm.layernorm ? 0 : act(N, C);
    const int64_t qkv = int64_t(c.query_projection_size() + 2 * c.kv_projection_size()) / tp;
    b += act(N, qkv);
    if (c.qk_layernorm) b += act(N, qkv) + f32(N * (c.num_attention_heads + c.query_groups()) / tp);
    if (!rm.core_attn) b += act(N, c.query_projection_size() / tp) + f32(N * c.num_attention_heads / tp);  // out, lse
    return b;
  }

  // MLASelfAttention's Saved (multi_latent_attention.h), H = heads / TP, D = max(Dn + R, Dv):
  // the down projections' input (ln1's output, this rank's n rows: they are replicated; without q
  // LoRA linear_q_proj's is it too, or its own gathered copy under SP); the latents' norms' inputs
  // and statistics (with --qk-layernorm, n rows); the up projections' inputs (gathered: N rows);
  // the packed [N, H, 3, D] core-attention input, its output [N, H, D], lse and linear_proj's input
  // (the output's first Dv columns, a copy) unless core_attn is recomputed.
  int64_t mla(const RecomputeModules& rm) const {
    const int64_t H = c.num_attention_heads / tp, L = c.kv_lora_rank, Lq = c.q_lora_rank;
    const int64_t D = std::max(c.qk_head_dim + c.qk_pos_emb_head_dim, c.v_head_dim);
    int64_t b = 0;
    if (!rm.layernorm) b += act(n, C) + (Lq == 0 && sp() ? act(N, C) : 0);
    if (Lq > 0) b += act(N, Lq) + (c.qk_layernorm ? act(n, Lq) + f32(n) : 0);
    b += act(N, L) + (c.qk_layernorm ? act(n, L) + f32(n) : 0);
    b += act(N, H * 3 * D);
    if (!rm.core_attn) b += act(N, H * D) + f32(N * H) + act(N, H * c.v_head_dim);
    return b;
  }

  // What layer `l` (global number) keeps from forward to backward, without full recomputation.
  int64_t layer(int number) const {
    const RecomputeModules rm = c.selective_recompute();
    int64_t b = act(n, C) + norm_stats();  // the input (ln1's x) and ln1's statistics
    b += c.multi_latent_attention ? mla(rm) : attention(rm);
    b += act(n, C) + norm_stats();  // x1 = x + attention (ln2's x) and ln2's statistics
    if (!c.is_moe_layer(number)) {
      if (rm.mlp) return b + (rm.layernorm ? 0 : act(n, C));  // the MLP's input only
      return b + mlp(c.ffn_hidden_size, !rm.layernorm, c.layer_recomputes_gelu(number));
    }
    // MoE: the router's tokens (the norm's output, gathered under SP), the dispatcher's maps and
    // probabilities, the experts' rows (k per token, dropless), fc1's output and the activation,
    // the combine's input; the shared experts' MLP.
    const bool shared = c.moe_shared_expert_intermediate_size > 0;
    if (rm.moe) return b + (rm.layernorm ? 0 : act(n, C));
    const int64_t k = c.moe_router_topk, R = N * k, fm = c.moe_ffn_size();
    if (!rm.layernorm) b += act(N, C);
    b += 2 * t(R * 4) + f32(R) + act(R, C);  // row_map, row_source (int32), probs, expert_output
    if (l.ep > 1) b += 2 * t(R * 4);         // the alltoall's regrouping
    b += act(R, C) + act(R, (c.gated_linear_unit ? 2 : 1) * fm / tp) + (rm.moe_act ? 0 : act(R, fm / tp));
    if (shared) {
      if (rm.shared_experts)
        b += sp() && !rm.layernorm ? act(n, C) : 0;  // its input (else the router's tokens)
      else
        b += mlp(c.moe_shared_expert_intermediate_size, sp() && !rm.layernorm, false);
    }
    return b;
  }

  // The CPU GEMM's workspace (kernels/gemm.h): packing buffers and fp32 copies. Host only:
  // cuBLAS's workspace is small.
  int64_t gemm_ws(int64_t m, int64_t n, int64_t k, bool f32_out = false) const {
    if (!l.host_blocks) return 0;
    int64_t b = 0;
    for (int64_t w : cpu_gemm_workspace(m, n, k, c.params_dtype, f32_out ? DType::F32 : c.params_dtype)) b += t(w);
    return b;
  }

  // A layer's backward workspace beyond its Saved: the incoming gradient and dropout's copy of
  // it, the MLP's activation and pre-activation gradients and its input gradient.
  int64_t layer_backward(int number) const {
    const int64_t f = c.is_moe_layer(number) ? c.moe_ffn_size() * int64_t(c.moe_router_topk) : c.ffn_hidden_size;
    const int64_t f1 = (c.gated_linear_unit ? 2 : 1) * f;
    const int64_t drop = c.hidden_dropout > 0 ? act(n, C) : 0;
    return 2 * act(n, C) + drop + act(N, f / tp) + act(N, f1 / tp) + act(N, C) +
           std::max(gemm_ws(f1 / tp, C, N, true), gemm_ws(N, C, f1 / tp));  // fc1's weight and input gradients
  }
};

}  // namespace

MemoryEstimate estimate_memory(const TransformerConfig& c, const MemoryLayout& l) {
  MemoryEstimate m;
  const Counter k(c, l);
  const int64_t tp = l.tp, C = c.hidden_size, e = k.e;
  const int ep = std::max(l.ep, 1);

  // Parameters of this rank's chunks (dense and expert), as the layers register them.
  int64_t dense = 0, experts = 0;
  const int64_t ln = c.normalization == Normalization::LayerNorm ? 2 * C : C;
  const int64_t qkv = c.query_projection_size() + 2 * c.kv_projection_size();
  auto mlp_params = [&](int64_t f) {
    const int64_t f1 = (c.gated_linear_unit ? 2 : 1) * f;
    return (f1 * C + f * C) / tp + (c.add_bias_linear ? f1 / tp + C : 0);
  };
  const int64_t attn_params = qkv * C / tp + (c.has_qkv_bias() ? qkv / tp : 0) +
                              (c.qk_layernorm ? 2 * c.head_dim() : 0) + int64_t(c.query_projection_size()) * C / tp +
                              (c.add_bias_linear ? C : 0);
  // Multi-latent attention: the down projections and the latents' RMSNorms replicated, the up
  // projections and linear_proj split over TP (multi_latent_attention.h).
  int64_t mla_params = 0;
  if (c.multi_latent_attention) {
    const int64_t H = c.num_attention_heads, Lq = c.q_lora_rank, L = c.kv_lora_rank, R = c.qk_pos_emb_head_dim;
    const int64_t b = c.add_bias_linear ? 1 : 0, q_out = H * (c.qk_head_dim + R);
    auto linear = [&](int64_t in, int64_t out, int64_t split) { return (in * out + b * out) / split; };
    mla_params = (Lq > 0 ? linear(C, Lq, 1) + (c.qk_layernorm ? Lq : 0) + linear(Lq, q_out, tp) : linear(C, q_out, tp)) +
                 linear(C, L + R, 1) + (c.qk_layernorm ? L : 0) + linear(L, H * (c.qk_head_dim + c.v_head_dim), tp) +
                 H * c.v_head_dim * C / tp + b * C;
  }
  for (const ModelChunkConfig& ch : l.chunks) {
    if (ch.pre_process)
      dense += c.padded_vocab_size / tp * C + (c.learned_positions() ? int64_t(c.max_position_embeddings) * C : 0);
    for (int i = ch.first_layer; i < ch.first_layer + ch.num_layers; ++i) {
      dense += 2 * ln + (c.multi_latent_attention ? mla_params : attn_params);
      if (!c.is_moe_layer(i)) {
        dense += mlp_params(c.ffn_hidden_size);
        continue;
      }
      dense += int64_t(c.num_moe_experts) * C;
      if (c.moe_shared_expert_intermediate_size > 0) dense += mlp_params(c.moe_shared_expert_intermediate_size);
      const int64_t fm = c.moe_ffn_size();
      experts += int64_t(c.num_moe_experts / ep) * ((c.gated_linear_unit ? 2 : 1) * fm + fm) * C / tp;
    }
    if (ch.post_process) {
      dense += ln;
      const bool own_output = c.untie_embeddings_and_output_weights || !ch.pre_process;
      if (own_output) dense += c.padded_vocab_size / tp * C;
    }
  }
  // One buffer per dtype and kind (ParamAndGradBuffer), the experts' apart.
  m.weights = k.t(dense * e) + k.t(experts * e);
  m.grads = k.t(dense * 4) + k.t(experts * 4);  // fp32 main grads
  // fp32 optimizer state: Adam's two moments (SGD's momentum) and the master weights of
  // bf16/fp16 parameters, sharded by the distributed optimizer over the data- and
  // context-parallel ranks (which hold the same weights), the experts' over expert-DP.
  const int states = (l.adam ? 2 : 1) + (c.params_dtype == DType::F32 ? 0 : 1);
  const int64_t dp = l.distributed_optimizer ? int64_t(std::max(l.dp, 1)) * std::max(l.cp, 1) : 1;
  const int64_t edp = l.distributed_optimizer ? std::max<int64_t>(int64_t(l.dp) * std::max(l.cp, 1) / ep, 1) : 1;
  m.optimizer = states * (k.t(dense / dp * 4) + k.t(experts / edp * 4));

  // Activations of one microbatch, chunk by chunk; full recomputation keeps only each group's
  // input.
  for (const ModelChunkConfig& ch : l.chunks) {
    for (int i = 0; i < ch.num_layers; ++i) {
      int first = 0, last = 0;
      if (!c.full_recompute_group(i, ch.num_layers, &first, &last))
        m.activations_per_microbatch += k.layer(ch.first_layer + i);
      else if (i == first)
        m.activations_per_microbatch += k.act(k.n, C);
    }
    if (ch.post_process)  // the final norm's input and statistics, and the output layer's input
      m.activations_per_microbatch += k.act(k.n, C) + k.norm_stats() + k.act(k.N, C);
  }
  // Backward, layer by layer from the last: what is still kept, plus a recomputed group's
  // activations (rebuilt just before its last layer's backward), plus the layer's workspace.
  int64_t backward_excess = 0;  // the most above activations_per_microbatch
  {
    int64_t live = m.activations_per_microbatch;
    for (size_t ci = l.chunks.size(); ci-- > 0;) {
      const ModelChunkConfig& ch = l.chunks[ci];
      if (ch.post_process) live -= k.act(k.n, C) + k.norm_stats() + k.act(k.N, C);
      for (int i = ch.num_layers; i-- > 0;) {
        const int number = ch.first_layer + i;
        int first = 0, last = 0;
        if (c.full_recompute_group(i, ch.num_layers, &first, &last) && i == last)
          for (int j = first; j <= last; ++j) live += k.layer(ch.first_layer + j) - (j == first ? k.act(k.n, C) : 0);
        backward_excess = std::max(backward_excess, live + k.layer_backward(number) - m.activations_per_microbatch);
        live -= k.layer(number);
      }
    }
  }

  // Microbatches in flight: all of one before its backward without pipelining; 1F1B's warm-up
  // keeps P - rank on rank `rank`; interleaved, Megatron's count of warm-up chunk forwards (each
  // holds one chunk, 1/V of the rank's layers).
  const int P = std::max(l.pp, 1), M = std::max(l.num_microbatches, 1), V = std::max(int(l.chunks.size()), 1);
  if (P == 1) {
    m.microbatches_in_flight = 1;
  } else if (V == 1) {
    m.microbatches_in_flight = std::min(M, P - l.pp_rank);
  } else {
    const int warmup = std::min(M * V, (P - l.pp_rank - 1) * 2 + (V - 1) * P + 1);
    m.microbatches_in_flight = double(warmup) / double(V);
  }
  m.activations = int64_t(std::llround(double(m.activations_per_microbatch) * m.microbatches_in_flight));

  // The transient on top: on the loss's rank, the logits (in place their gradient) with the
  // per-token losses and, as backward starts, the output layer's input gradient; elsewhere (and
  // after the logits are gone) the largest layer backward workspace, plus a recomputed group.
  const bool loss_here = !l.chunks.empty() && l.chunks.back().post_process;
  int64_t logits = 0;
  if (loss_here) {
    const int64_t K = std::clamp<int64_t>(c.cross_entropy_chunks, 1, k.N);
    const int64_t rows = (k.N + K - 1) / K;
    const int64_t V = c.padded_vocab_size / tp;
    // The logits' GEMM, then (backward) the output layer's input and weight gradients, each with
    // its workspace, next to the logits (their gradient in place) and the losses.
    const int64_t base = k.act(rows, V) + k.f32(k.N) + (K > 1 ? k.act(k.N, C) : 0);
    logits = base + std::max({k.gemm_ws(rows, V, C), k.act(rows, C) + k.gemm_ws(rows, C, V),
                              k.act(rows, C) + k.gemm_ws(V, C, rows, true)});
  }
  m.transient = std::max(logits, backward_excess);

  // The batches: tokens, labels (int32) and the loss mask (fp32) of each microbatch in flight,
  // and the loss's per-token weights.
  const int64_t tokens = int64_t(l.micro_batch_size) * c.seq_length;
  m.data = int64_t(std::ceil(m.microbatches_in_flight)) * 3 * k.t(tokens * 4) + k.t(tokens * 4);
  return m;
}

void print_memory_report(std::FILE* log, const MemoryEstimate& mine, Communicator& world, bool first_rank,
                         const std::vector<std::string>& rank_names) {
  const double mib = 1048576.0;
  Tensor row = Tensor::empty({7}, DType::F32);
  float* r = row.data<float>();
  r[0] = float(double(mine.weights) / mib), r[1] = float(double(mine.grads) / mib);
  r[2] = float(double(mine.optimizer) / mib), r[3] = float(double(mine.activations) / mib);
  r[4] = float(double(mine.transient + mine.data) / mib), r[5] = float(double(mine.peak()) / mib);
  r[6] = float(mine.microbatches_in_flight);
  Tensor all = Tensor::empty({7 * int64_t(world.size())}, DType::F32);
  world.all_gather(row, all);
  if (!log || !first_rank) return;
  fmt::print(log, "> theoretical memory footprint per rank (MiB; activations: the microbatches in flight, as "
                  "this build's layers keep them):\n");
  for (int i = 0; i < world.size(); ++i) {
    const float* x = all.data<float>() + 7 * i;
    fmt::print(log,
               ">   [{}] weights {:.2f} | grads {:.2f} | optimizer state {:.2f} | activations {:.2f} ({:g} "
               "microbatches) | transient {:.2f} | predicted peak {:.2f}\n",
               size_t(i) < rank_names.size() ? rank_names[size_t(i)] : fmt::format("rank {}", i), x[0], x[1], x[2],
               x[3], x[6], x[4], x[5]);
  }
}

}  // namespace mt
