#pragma once
// Shared scaffolding of the multi-rank training tests (run under mpirun): a tiny fp32 GPT's
// arguments, a run that returns the final parameters, a directory every rank agrees on, and a
// verdict reduced over the world.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "train/trainer.h"

namespace mt::testing {

// 2 layers, hidden 32, 4 heads, seq 16, micro batch 2, global batch 8, 20 iterations on CPU, no
// dropout, no evaluation, several small gradient buckets (distributed-optimizer shard
// boundaries fall inside parameters), a 2-minute distributed timeout.
inline TrainingArgs tiny_training_args(int64_t vocab, int64_t divisible_by) {
  TrainingArgs a;
  a.mock_data = true;
  a.vocab_size = vocab;
  a.make_vocab_size_divisible_by = divisible_by;
  a.num_layers = 2;
  a.hidden_size = 32;
  a.num_attention_heads = 4;
  a.ffn_hidden_size = 64;
  a.seq_length = 16;
  a.micro_batch_size = 2;
  a.global_batch_size = 8;
  a.train_iters = 20;
  a.lr = 1e-3;
  a.min_lr = 1e-4;
  a.log_interval = 1000;
  a.eval_interval = 1000;
  a.eval_iters = 0;
  a.hidden_dropout = a.attention_dropout = 0.0f;
  a.device = "cpu";
  a.ddp_bucket_size = 3000;
  a.distributed_timeout_minutes = 2;
  return a;
}

// The Llama family on the same budget: RMSNorm, SwiGLU (ffn 64), grouped-query attention with
// 8 query heads in 2 groups of head dim 8 (hidden 32 != 8 x 8), RoPE, untied output layer, no
// biases. rope_scaling: Llama 3.1's frequency scaling (base 10000 over seq 16: scaled band hit).
inline TrainingArgs tiny_llama_args(int64_t vocab, int64_t divisible_by, bool rope_scaling = false) {
  TrainingArgs a = tiny_training_args(vocab, divisible_by);
  a.normalization = "RMSNorm";
  a.swiglu = true;
  a.num_attention_heads = 8;
  a.group_query_attention = true;
  a.num_query_groups = 2;
  a.kv_channels = 8;
  a.position_embedding_type = "rope";
  a.use_rope_scaling = rope_scaling;
  a.rope_scaling_factor = 8;
  a.untie_embeddings_and_output_weights = true;
  a.disable_bias_linear = true;
  return a;
}

// Qwen 3's additions to it: q/k norm, and (Qwen 2's) the QKV bias.
inline TrainingArgs tiny_qwen_args(int64_t vocab, int64_t divisible_by) {
  TrainingArgs a = tiny_llama_args(vocab, divisible_by);
  a.qk_layernorm = true;
  a.add_qkv_bias = true;
  return a;
}

// Mixtral-style MoE on the Llama budget: 8 experts of ffn 32, top-2 (softmax over the top-k
// logits), load-balancing and z losses on.
inline TrainingArgs tiny_mixtral_args(int64_t vocab, int64_t divisible_by) {
  TrainingArgs a = tiny_llama_args(vocab, divisible_by);
  a.num_experts = 8;
  a.moe_router_topk = 2;
  a.moe_ffn_hidden_size = 32;
  a.moe_aux_loss_coeff = 0.01;
  a.moe_z_loss_coeff = 0.001;
  return a;
}

// Qwen3-MoE-style and the rest of the router's options: q/k norm, 8 experts top-4 with pre-softmax
// scores, a dense first layer (--moe-layer-freq [0,1,1]), a shared expert, seq_aux_loss, and
// aux-loss-free balancing (expert bias); 3 layers.
inline TrainingArgs tiny_qwen_moe_args(int64_t vocab, int64_t divisible_by) {
  TrainingArgs a = tiny_qwen_args(vocab, divisible_by);
  a.num_layers = 3;
  a.num_experts = 8;
  a.moe_router_topk = 4;
  a.moe_router_pre_softmax = true;
  a.moe_ffn_hidden_size = 16;
  a.moe_layer_freq = "[0,1,1]";
  a.moe_shared_expert_intermediate_size = 32;
  a.moe_router_load_balancing_type = "seq_aux_loss";
  a.moe_aux_loss_coeff = 0.01;
  a.moe_router_enable_expert_bias = true;
  a.moe_router_bias_update_rate = 0.01;
  return a;
}

// DeepSeek-V3's router on the Mixtral budget: sigmoid scores over 8 experts in 4 groups, top-4 from
// the best 2 groups, expert bias, top-k scaling 2.5, a shared expert, the first layer dense (3 layers).
inline TrainingArgs tiny_deepseek_moe_args(int64_t vocab, int64_t divisible_by) {
  TrainingArgs a = tiny_mixtral_args(vocab, divisible_by);
  a.num_layers = 3;
  a.moe_layer_freq = "[0,1,1]";
  a.moe_router_topk = 4;
  a.moe_router_score_function = "sigmoid";
  a.moe_router_num_groups = 4;
  a.moe_router_group_topk = 2;
  a.moe_router_enable_expert_bias = true;
  a.moe_router_bias_update_rate = 0.01;
  a.moe_router_topk_scaling_factor = 2.5;
  a.moe_shared_expert_intermediate_size = 32;
  a.moe_router_load_balancing_type = "seq_aux_loss";
  a.moe_aux_loss_coeff = 0.001;
  return a;
}

// Multi-latent attention on a model's budget (DeepSeek-V3's attention): 4 heads, q LoRA 16, kv LoRA
// 16, q/k heads 8 + RoPE 4, value heads 8, the latents' RMSNorms, YaRN x4 over 8 positions (the
// interpolated band is hit at seq 16) with mscale 1 / all-dim 0.7 (tables and softmax scaled).
inline TrainingArgs with_mla(TrainingArgs a) {
  a.multi_latent_attention = true;
  a.group_query_attention = false;
  a.num_query_groups = 1;  // TrainingArgs' default (a value without --group-query-attention is refused)
  a.num_attention_heads = 4;
  a.q_lora_rank = 16;
  a.kv_lora_rank = 16;
  a.qk_head_dim = 8;
  a.qk_pos_emb_head_dim = 4;
  a.v_head_dim = 8;
  a.qk_layernorm = true;
  a.rope_type = "yarn";
  a.rotary_scaling_factor = 4;
  a.original_max_position_embeddings = 8;
  a.mscale = 1.0;
  a.mscale_all_dim = 0.7;
  return a;
}

// Trains with `groups` (null: the world's layout from the arguments), log lines to /dev/null.
inline TrainResult run_training(const TrainingArgs& a, ProcessGroups* groups = nullptr) {
  static std::FILE* devnull = std::fopen("/dev/null", "w");
  TrainOptions o;
  o.return_final_params = true;
  o.groups = groups;
  return pretrain_gpt(a, devnull, o);
}

// An empty directory every rank agrees on (named after rank 0's pid).
inline std::string shared_dir(const std::string& tag) {
  auto w = dist::world();
  const double pid = w->all_reduce_scalar(w->rank() == 0 ? double(::getpid()) : 0.0);
  const auto p = std::filesystem::temp_directory_path() / ("mt_ckpt_" + tag + "_" + std::to_string(int64_t(pid)));
  if (w->rank() == 0) std::filesystem::remove_all(p);
  w->barrier();
  return p.string();
}

// Sums `bad` over the world; rank 0 prints one line. Returns 1 when any rank found a problem.
inline int report(const std::string& what, int bad, double worst) {
  auto w = dist::world();
  const int all = int(w->all_reduce_scalar(double(bad)));
  if (w->rank() == 0) std::printf("%-40s worst diff %.3g: %s\n", what.c_str(), worst, all ? "FAIL" : "ok");
  return all ? 1 : 0;
}

}  // namespace mt::testing
