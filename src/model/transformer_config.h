#pragma once
// TransformerConfig: the model's hyper-parameters with Megatron-Core's field names
// (megatron/core/transformer/transformer_config.py), and the per-step context layers read in
// forward. One config describes every decoder-only family we build: GPT-2 (LayerNorm, learned
// positions, GeLU MLP, biases, tied output layer), Llama 2/3 and Mistral (RMSNorm, RoPE, SwiGLU,
// grouped-query attention, no biases, untied), Qwen 2 (plus QKV biases) and Qwen 3 (plus q/k norm).
// The defaults are GPT-2's; TransformerLayerSpec (transformer_layer_spec.h) turns a config into
// the choice of module for each slot of a layer.
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mt {

enum class Normalization : uint8_t { LayerNorm, RMSNorm };
enum class Activation : uint8_t { Gelu, Silu };  // GeLU: tanh approximation (GPT-2)
enum class PositionEmbedding : uint8_t { LearnedAbsolute, Rope, None };
enum class MoeScoreFunction : uint8_t { Softmax, Sigmoid };
// --moe-router-load-balancing-type: the auxiliary loss over each microbatch's tokens (aux_loss),
// over each sequence (seq_aux_loss), with the expert loads counted over the data-parallel group's
// concurrent microbatches (global_aux_loss; by definition it depends on the data-parallel size),
// or none.
enum class MoeLoadBalancing : uint8_t { AuxLoss, SeqAuxLoss, GlobalAuxLoss, None };
enum class MoeTokenDropPolicy : uint8_t { Probs, Position };
enum class MoeTokenDispatcher : uint8_t { AllToAll, AllGather };
// Activation recomputation (Megatron's --recompute-granularity / --recompute-method).
// Full: whole layers are rerun (GPTModel's layer loop); selective: chosen modules inside a layer.
enum class RecomputeGranularity : uint8_t { None, Full, Selective };
// Full only. Uniform: a chunk's layers in groups of recompute_num_layers, only each group's input
// kept; block: the first recompute_num_layers layers of each chunk, each its own group.
enum class RecomputeMethod : uint8_t { None, Uniform, Block };
// --recompute-modules (selective): what each module keeps and reruns here (transformer_layer.cpp).
struct RecomputeModules {
  bool core_attn = false;       // keep qkv; rerun the flash-style core attention for out and lse
  bool layernorm = false;       // keep the norms' inputs; rerun them before their consumers' backward
  bool mlp = false;             // dense MLP: keep its input; rerun it before its backward
  bool moe = false;             // MoE layer: keep its input; rerun it (routing too) before its backward
  bool moe_act = false;         // experts: keep fc1's output; rerun the activation
  bool shared_experts = false;  // MoE's shared experts: keep their input; rerun them
  bool mlp_act = false;         // ours (= --recompute-gelu): dense MLP's activation
};
// --rope-type: plain RoPE frequencies, or YaRN's (DeepSeek-V3; rotary.h states the math).
enum class RopeType : uint8_t { Rope, Yarn };

struct TransformerConfig {
  int num_layers = 2;
  int hidden_size = 64;
  int ffn_hidden_size = 256;      // 4 * hidden by default
  int num_attention_heads = 4;
  int num_query_groups = 0;       // grouped-query attention: key/value heads (0: num_attention_heads)
  int kv_channels = 0;            // head dimension (0: hidden_size / num_attention_heads)
  int seq_length = 64;
  int max_position_embeddings = 64;
  int64_t vocab_size = 257;        // the tokenizer's vocabulary
  int64_t padded_vocab_size = 384; // rounded up to make_vocab_size_divisible_by
  float init_method_std = 0.02f;
  float hidden_dropout = 0.1f;
  float attention_dropout = 0.1f;
  Normalization normalization = Normalization::LayerNorm;
  float layernorm_epsilon = 1e-5f;
  bool gated_linear_unit = false;  // MLP: fc1 -> [gate | up], act(gate) * up (--swiglu: with Silu)
  Activation activation = Activation::Gelu;
  bool add_bias_linear = true;     // biases of every linear layer (--disable-bias-linear: off)
  bool add_qkv_bias = false;       // linear_qkv's bias even without add_bias_linear (Qwen 2)
  bool qk_layernorm = false;       // RMSNorm of each query and key head before RoPE (Qwen 3)
  PositionEmbedding position_embedding_type = PositionEmbedding::LearnedAbsolute;
  float rotary_base = 10000.0f;
  float rotary_percent = 1.0f;     // the share of each head's channels RoPE rotates
  bool rope_scaling = false;       // Llama 3.1's frequency scaling (--use-rope-scaling)
  float rope_scaling_factor = 8.0f;
  // YaRN (rope_type Yarn; Megatron's MLATransformerConfig fields, DeepSeek-V3's rope_scaling):
  // frequencies interpolated by rotary_scaling_factor below the wavelength band set by
  // beta_fast/beta_slow over original_max_position_embeddings, and the mscale corrections.
  RopeType rope_type = RopeType::Rope;
  float rotary_scaling_factor = 1.0f;
  float mscale = 1.0f;
  float mscale_all_dim = 0.0f;
  int original_max_position_embeddings = 4096;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  // Multi-latent attention (DeepSeek-V2/V3, Megatron's MLASelfAttention): queries through a
  // low-rank q_lora_rank latent (0: one linear_q_proj), keys and values through a kv_lora_rank
  // latent, heads of qk_head_dim + qk_pos_emb_head_dim (query/key) and v_head_dim (value), the
  // RoPE part of the key (qk_pos_emb_head_dim) shared by all heads.
  bool multi_latent_attention = false;
  int q_lora_rank = 0;
  int kv_lora_rank = 32;
  int qk_head_dim = 128;
  int qk_pos_emb_head_dim = 64;
  int v_head_dim = 128;
  bool untie_embeddings_and_output_weights = false;
  DType params_dtype = DType::F32;  // bf16/fp16 under --bf16/--fp16
  bool recompute_gelu = false;      // MLP: keep only fc1's output, recompute GeLU in backward
  // With recompute_gelu: only the first N layers recompute (0: all). With full recomputation:
  // Megatron's N (the group size of uniform, the recomputed layers per chunk of block).
  int recompute_num_layers = 0;
  RecomputeGranularity recompute_granularity = RecomputeGranularity::None;
  RecomputeMethod recompute_method = RecomputeMethod::None;
  RecomputeModules recompute_modules;  // read only with Selective
  // The output layer and the fused loss, with the output layer's backward, run over this many
  // chunks of tokens: the logits take 1/N of their memory (see GPTModel::forward_loss).
  int cross_entropy_chunks = 1;

  // Mixture of Experts (Megatron-Core's moe_* fields; num_moe_experts 0: every MLP is dense).
  int num_moe_experts = 0;
  int moe_ffn_hidden_size = 0;        // each expert's ffn width (0: ffn_hidden_size)
  int moe_router_topk = 2;
  MoeScoreFunction moe_router_score_function = MoeScoreFunction::Softmax;
  // Softmax over all experts before the top-k (Mixtral-without-renormalisation); the default
  // takes the top-k logits first and normalises over them (Mixtral, Qwen3-MoE's norm_topk_prob).
  bool moe_router_pre_softmax = false;
  float moe_router_topk_scaling_factor = 0.0f;  // 0: none; else the top-k probabilities times this
  // Group-limited routing (DeepSeek-V3): the experts form num_groups equal groups; a token may use
  // only the group_topk groups whose best topk / group_topk routing scores sum highest (0: off).
  int moe_router_num_groups = 0;
  int moe_router_group_topk = 0;
  // Which layers are MoE: moe_layer_pattern[l] != 0 (--moe-layer-freq: N means every Nth layer,
  // starting with layer 0; a list gives the pattern). Empty: every layer.
  std::vector<int> moe_layer_pattern;
  int moe_shared_expert_intermediate_size = 0;  // 0: no shared experts
  MoeLoadBalancing moe_router_load_balancing_type = MoeLoadBalancing::AuxLoss;
  float moe_aux_loss_coeff = 0.0f;
  float moe_z_loss_coeff = 0.0f;
  // Aux-loss-free balancing (DeepSeek-V3): a per-expert bias added to the scores for the top-k
  // choice only, moved by bias_update_rate * sign(mean load - load) after each step.
  bool moe_router_enable_expert_bias = false;
  float moe_router_bias_update_rate = 1e-3f;
  float moe_expert_capacity_factor = -1.0f;  // < 0: dropless
  MoeTokenDropPolicy moe_token_drop_policy = MoeTokenDropPolicy::Probs;
  bool moe_pad_expert_input_to_capacity = false;
  MoeTokenDispatcher moe_token_dispatcher_type = MoeTokenDispatcher::AllToAll;

  bool is_moe() const { return num_moe_experts > 0; }
  bool is_moe_layer(int layer) const {
    if (num_moe_experts <= 0) return false;
    if (moe_layer_pattern.empty()) return true;
    return moe_layer_pattern[size_t(layer) % moe_layer_pattern.size()] != 0;
  }
  int moe_ffn_size() const { return moe_ffn_hidden_size > 0 ? moe_ffn_hidden_size : ffn_hidden_size; }

  bool layer_recomputes_gelu(int layer) const {
    if (recompute_granularity == RecomputeGranularity::Selective && recompute_modules.mlp_act) return true;
    return recompute_gelu && (recompute_num_layers <= 0 || layer < recompute_num_layers);
  }
  // The selective modules in force (none unless granularity is selective).
  RecomputeModules selective_recompute() const {
    return recompute_granularity == RecomputeGranularity::Selective ? recompute_modules : RecomputeModules{};
  }
  // Full recomputation of a chunk of n layers: the group [first, last] holding chunk-local layer i,
  // or false when layer i keeps its activations.
  bool full_recompute_group(int i, int n, int* first, int* last) const;

  int head_dim() const { return kv_channels > 0 ? kv_channels : hidden_size / num_attention_heads; }
  int query_groups() const { return num_query_groups > 0 ? num_query_groups : num_attention_heads; }
  int query_projection_size() const { return head_dim() * num_attention_heads; }
  int kv_projection_size() const { return head_dim() * query_groups(); }
  // RoPE's rotated channels per head (rotary_percent of head_dim; multi-latent attention's
  // decoupled qk_pos_emb_head_dim).
  int rotary_dim() const {
    return multi_latent_attention ? qk_pos_emb_head_dim : int(float(head_dim()) * rotary_percent);
  }
  // Whether the model computes RoPE tables (multi-latent attention always rotates its RoPE part).
  bool uses_rope() const { return position_embedding_type == PositionEmbedding::Rope || multi_latent_attention; }
  bool learned_positions() const { return position_embedding_type == PositionEmbedding::LearnedAbsolute; }
  bool has_qkv_bias() const { return add_bias_linear || add_qkv_bias; }
};

// --moe-layer-freq: N -> [1, 0, .., 0] (N entries; every Nth layer from layer 0), "1" -> every
// layer (empty), a list "[1,0,1,1]" -> itself (num_layers entries). UserError naming the flag.
std::vector<int> parse_moe_layer_freq(const std::string& value, int num_layers);

// --recompute-modules: Megatron's names (core_attn, moe_act, layernorm, mla_up_proj, mlp, moe,
// shared_experts) and ours (mlp_act); UserError naming the flag on an unknown or unbuilt one.
RecomputeModules parse_recompute_modules(const std::vector<std::string>& names);

// Megatron's --make-vocab-size-divisible-by (times the tensor-parallel size).
int64_t pad_vocab_size(int64_t vocab, int64_t divisible_by);

const char* normalization_name(Normalization n);      // "LayerNorm" | "RMSNorm" (Megatron's spelling)
const char* position_embedding_name(PositionEmbedding p);  // "learned_absolute" | "rope" | "none"
// Whether cfg differs from GPT-2's architecture, and a one-line account of how (printed at start).
bool describes_non_gpt2(const TransformerConfig& cfg);
std::string describe_architecture(const TransformerConfig& cfg);

// What a forward pass needs beyond its inputs: whether dropout is on, and the random stream
// base that makes this microbatch's dropout masks unique (seed, global microbatch counter).
struct MoEMetrics;  // model/moe/moe_metrics.h

struct ForwardContext {
  bool training = true;
  uint64_t seed = 1234;
  uint64_t microbatch = 0;  // global microbatch index: iteration * num_microbatches + m
  // Set by the model for its layers: the microbatch's [batch, seq] token grid on this rank (with
  // context parallelism seq is this rank's S / CP tokens of each sample; with sequence
  // parallelism a layer's input holds only this rank's share of the grid's tokens).
  int64_t batch = 0, seq = 0;
  // The tokens' places in their sequences under context parallelism or document masks
  // (model/token_positions.h); null: positions 0..seq-1, one document per sample.
  const struct TokenPositions* positions = nullptr;
  // MoE: the weight of this microbatch's auxiliary losses in the objective, the same factor the
  // language-model loss's per-token gradient carries beyond 1/tokens (loss_scale / (M DP)), and
  // where MoE layers add their losses and token counts (null: not tracked).
  double moe_loss_scale = 1.0;
  MoEMetrics* moe_metrics = nullptr;
  // Random stream of a dropout site in this microbatch.
  uint64_t dropout_stream(uint64_t site) const { return site ^ (0x9E3779B97F4A7C15ull * (microbatch + 1)); }
};

}  // namespace mt
