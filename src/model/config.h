#pragma once
// Model hyper-parameters (Megatron's names) and the per-step context layers read in forward.
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace mt {

struct GPTConfig {
  int num_layers = 2;
  int hidden_size = 64;
  int ffn_hidden_size = 256;      // 4 * hidden by default
  int num_attention_heads = 4;
  int seq_length = 64;
  int max_position_embeddings = 64;
  int64_t vocab_size = 257;        // the tokenizer's vocabulary
  int64_t padded_vocab_size = 384; // rounded up to make_vocab_size_divisible_by
  float init_method_std = 0.02f;
  float hidden_dropout = 0.1f;
  float attention_dropout = 0.1f;
  float layernorm_epsilon = 1e-5f;
  DType params_dtype = DType::F32;  // bf16/fp16 under --bf16/--fp16
  bool recompute_gelu = false;      // MLP: keep only fc1's output, recompute GeLU in backward
  int recompute_num_layers = 0;     // with recompute_gelu: only the first N layers recompute (0: all)
  // The output layer and the fused loss, with the output layer's backward, run over this many
  // chunks of tokens: the logits take 1/N of their memory (see GPTModel::forward_loss).
  int cross_entropy_chunks = 1;

  bool layer_recomputes_gelu(int layer) const {
    return recompute_gelu && (recompute_num_layers <= 0 || layer < recompute_num_layers);
  }

  int head_dim() const { return hidden_size / num_attention_heads; }
};

// Megatron's --make-vocab-size-divisible-by (times the tensor-parallel size).
int64_t pad_vocab_size(int64_t vocab, int64_t divisible_by);

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
