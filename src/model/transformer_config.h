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

#include "core/dtype.h"

namespace mt {

enum class Normalization : uint8_t { LayerNorm, RMSNorm };
enum class Activation : uint8_t { Gelu, Silu };  // GeLU: tanh approximation (GPT-2)
enum class PositionEmbedding : uint8_t { LearnedAbsolute, Rope, None };

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
  bool untie_embeddings_and_output_weights = false;
  DType params_dtype = DType::F32;  // bf16/fp16 under --bf16/--fp16
  bool recompute_gelu = false;      // MLP: keep only fc1's output, recompute GeLU in backward
  int recompute_num_layers = 0;     // with recompute_gelu: only the first N layers recompute (0: all)
  // The output layer and the fused loss, with the output layer's backward, run over this many
  // chunks of tokens: the logits take 1/N of their memory (see GPTModel::forward_loss).
  int cross_entropy_chunks = 1;

  bool layer_recomputes_gelu(int layer) const {
    return recompute_gelu && (recompute_num_layers <= 0 || layer < recompute_num_layers);
  }

  int head_dim() const { return kv_channels > 0 ? kv_channels : hidden_size / num_attention_heads; }
  int query_groups() const { return num_query_groups > 0 ? num_query_groups : num_attention_heads; }
  int query_projection_size() const { return head_dim() * num_attention_heads; }
  int kv_projection_size() const { return head_dim() * query_groups(); }
  // RoPE's rotated channels per head (rotary_percent of head_dim).
  int rotary_dim() const { return int(float(head_dim()) * rotary_percent); }
  bool learned_positions() const { return position_embedding_type == PositionEmbedding::LearnedAbsolute; }
  bool has_qkv_bias() const { return add_bias_linear || add_qkv_bias; }
};

// Megatron's --make-vocab-size-divisible-by (times the tensor-parallel size).
int64_t pad_vocab_size(int64_t vocab, int64_t divisible_by);

const char* normalization_name(Normalization n);      // "LayerNorm" | "RMSNorm" (Megatron's spelling)
const char* position_embedding_name(PositionEmbedding p);  // "learned_absolute" | "rope" | "none"
// Whether cfg differs from GPT-2's architecture, and a one-line account of how (printed at start).
bool describes_non_gpt2(const TransformerConfig& cfg);
std::string describe_architecture(const TransformerConfig& cfg);

// What a forward pass needs beyond its inputs: whether dropout is on, and the random stream
// base that makes this microbatch's dropout masks unique (seed, global microbatch counter).
struct ForwardContext {
  bool training = true;
  uint64_t seed = 1234;
  uint64_t microbatch = 0;  // global microbatch index: iteration * num_microbatches + m
  // Set by the model for its layers: the microbatch's full [batch, seq] token grid (with
  // sequence parallelism a layer's input holds only this rank's share of the tokens).
  int64_t batch = 0, seq = 0;
  // Random stream of a dropout site in this microbatch.
  uint64_t dropout_stream(uint64_t site) const { return site ^ (0x9E3779B97F4A7C15ull * (microbatch + 1)); }
};

}  // namespace mt
