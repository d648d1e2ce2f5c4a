#pragma once
// GPTModel (Megatron-Core's name for every decoder-only language model): the vocabulary-parallel
// embedding (with learned absolute positions, or none for RoPE models), num_layers transformer
// layers built from the config's TransformerLayerSpec, the final norm, and the output layer (tied
// to the word embeddings or its own `output_layer.weight`) with the fused vocabulary-parallel
// loss. GPT-2, Llama, Mistral and Qwen are configs of this one class. The vocabulary is padded
// (padding columns are masked out of the softmax). Parameter names follow Megatron-Core.
//
// A microbatch's activations live in Saved, owned by the caller, so a schedule can keep
// several microbatches in flight; backward consumes and frees them.
#include <memory>
#include <vector>

#include "model/transformer_config.h"
#include "model/kv_cache.h"
#include "model/norm.h"
#include "model/rotary.h"
#include "model/parallel_config.h"
#include "model/param_buffer.h"
#include "model/param_hooks.h"
#include "model/transformer_layer.h"

namespace mt {

// Which part of the model a chunk holds (a pipeline stage holds a part, a virtual stage one of
// several): the embedding (pre_process), transformer layers [first_layer, first_layer +
// num_layers) under their global numbers (names, dropout masks and init follow the global
// number), and the final norm, output layer and loss (post_process). The default is everything.
// A post-process chunk without the embedding keeps its own copy of a tied word embedding
// (Megatron's; keeping the two copies' gradients in sync is the pipeline schedule's job).
struct ModelChunkConfig {
  bool pre_process = true;
  bool post_process = true;
  int first_layer = 0;
  int num_layers = -1;  // -1: the rest of the model's layers
};

class GPTModel {
 public:
  struct Saved {
    Tensor tokens;  // int32 [B, T] (pre-process chunks)
    int64_t batch = 0, seq = 0;  // the microbatch's token grid
    float emb_dropout_p = 0.0f;
    uint64_t seed = 0, emb_drop_stream = 0;
    std::vector<HiddenRun> emb_drop_runs;
    TokenPositions positions;  // ctx.positions' (context parallelism, document masks)
    RotaryTables rope;         // then RoPE's tables per token
    std::vector<TransformerLayer::Saved> layers;
    // Full recomputation: each recomputed group's input (at its first layer's index), and the
    // layers' forward context without its MoE metrics sink (the rerun must not count twice).
    std::vector<Tensor> recompute_inputs;
    ForwardContext recompute_ctx;
    Norm::Saved final_ln;
    Tensor final_hidden;  // [B*T, C], input of the output layer (all tokens)
    Tensor dlogits;       // [B*T, Vp / TP], written by the fused loss
    Tensor dhidden;       // [B*T, C], final_hidden's gradient, when the loss ran in chunks
  };

  GPTModel(const TransformerConfig& cfg, Device device, const ModelParallelConfig& par = {},
           const ModelChunkConfig& chunk = {});
  // A chunk whose parameters join `buffer`, shared with the rank's other chunks (virtual
  // pipeline stages: one buffer per rank, so data-parallel reduction, the optimizer and
  // checkpoints see one flat layout), and its experts' weights `expert_buffer` (MoE models).
  // Registers only: the owner sets the bucketing and allocates the buffers after the last chunk,
  // before init() or any pass.
  GPTModel(const TransformerConfig& cfg, Device device, const ModelParallelConfig& par, const ModelChunkConfig& chunk,
           ParamAndGradBuffer& buffer, ParamAndGradBuffer* expert_buffer = nullptr);
  GPTModel(const GPTModel&) = delete;
  GPTModel& operator=(const GPTModel&) = delete;

  const TransformerConfig& config() const { return cfg_; }
  ParamAndGradBuffer& buffer() { return buf_; }
  const ParamAndGradBuffer& buffer() const { return buf_; }
  // MoE models: the experts' weights, apart from the dense ones because they are reduced over
  // the expert-data-parallel group (Megatron's expert ParamAndGradBuffer); null without experts.
  ParamAndGradBuffer* expert_buffer() const { return expert_buf_; }
  // Non-parameter state saved with the model (Megatron's persistent buffers): the MoE routers'
  // expert biases, fp32 on the host, under their parameter-style names.
  std::vector<std::pair<std::string, Tensor>> persistent_buffers() const;
  // Aux-loss-free balancing: moves each router's expert bias by the step's global token counts
  // (metrics reduced over the data-parallel group).
  void update_expert_bias(const struct MoEMetrics& global) const;
  const ModelChunkConfig& chunk() const { return chunk_; }
  // Of the buffer (all shards; every chunk sharing it), excluding vocabulary padding rows and
  // pipeline duplicates; MoE models: every expert, and (active) the top-k experts a token uses.
  int64_t num_parameters() const;
  int64_t num_active_parameters() const;
  // The tied word embeddings when the embedding and the output layer are in different chunks
  // (pipeline stages): the first chunk's weight or the last chunk's copy (a pipeline duplicate),
  // whose gradients the schedule sums over the embedding group; else -1.
  ParamAndGradBuffer::Id shared_embedding() const {
    return !cfg_.untie_embeddings_and_output_weights && chunk_.pre_process != chunk_.post_process ? wte_ : -1;
  }

  // Megatron init: weights N(0, init_method_std) (the untied output layer too), output
  // projections / sqrt(2 L), biases 0, norm weights 1. Depends only on the seed and parameter names.
  void init(uint64_t seed);

  // The chunk's input: tokens int32 [B, T] with pre_process, else the previous chunk's output
  // (hidden states [B, T, C], or this rank's [B T / TP, C] with sequence parallelism; ctx.batch
  // and ctx.seq then give the token grid).
  //
  // A chunk without post_process: input -> its last layer's output (the next chunk's input).
  Tensor forward(const Tensor& input, const ForwardContext& ctx, Saved& saved) const;
  // ... and its backward from the gradient of that output: accumulates the chunk's gradients and
  // returns the input's gradient (undefined with pre_process); frees saved.
  Tensor backward(const Tensor& doutput, Saved& saved) const;

  // Post-process chunks: input -> logits [B, T, padded_vocab / TP] (model dtype; with tensor
  // parallelism this rank's vocabulary shard).
  Tensor forward_logits(const Tensor& input, const ForwardContext& ctx, Saved& saved) const;
  // Forward with the fused softmax cross-entropy: returns fp32 per-token losses [B*T].
  // When dloss (fp32 [B*T], each token's weight in the objective) is given, the logit gradient
  // is computed in the same pass and kept in saved for backward().
  // With cfg.cross_entropy_chunks = K > 1 the output layer and the loss run over K chunks of
  // tokens, one [B*T / K, Vp / TP] logits buffer reused: each chunk's logit gradient goes through
  // the output layer's backward at once (the output layer's input gradient is kept in saved, the
  // tied word-embedding gradient accumulates), so the full logits never exist. Same values as
  // K = 1 up to the GEMMs' summation order; each extra chunk costs a pass over the fp32
  // word-embedding gradient.
  Tensor forward_loss(const Tensor& input, const Tensor& targets, const ForwardContext& ctx,
                      const Tensor* dloss, Saved& saved) const;
  // After forward_loss with dloss: accumulates every parameter's gradient into the main-grad
  // buffer; returns the input's gradient (undefined with pre_process); frees saved.
  Tensor backward(Saved& saved) const;
  // After the last microbatch's backward (once per buffer): all-reduce over TP the grads of replicated parameters
  // that are partial sums on each tp rank: under sequence parallelism the norms' weights and
  // biases and the row-parallel biases (each rank saw its share of the tokens), and with q/k norm
  // its weights (each rank saw its heads). Nothing without tensor parallelism.
  void finish_grad_sync() const;
  const ModelParallelConfig& parallel() const { return par_; }
  // Generation (a whole model: pre- and post-process). A zeroed key/value cache for `batch`
  // sequences of up to `capacity` tokens on the model's device (capacity <= max_position_embeddings
  // with learned positions).
  KVCache allocate_kv_cache(int64_t batch, int64_t capacity) const;
  // tokens: int32 [B, T] on the host or the model's device, right-padded: row b holds num_tokens[b] (1..T)
  // new tokens of sequence b, at positions cache.lengths[b] + t. Runs them through the model in
  // eval mode (no dropout), writes their keys and values into the cache, advances cache.lengths
  // and returns the logits of each row's last new token: [B, padded_vocab / TP] in the model's
  // dtype (with tensor parallelism this rank's vocabulary shard). A prompt batch from empty
  // caches is one call (the prefill); each decode step is another with T = 1.
  Tensor forward_inference(const Tensor& tokens, const std::vector<int32_t>& num_tokens, KVCache& cache) const;
  // Tells `hooks` (null: nobody) which parameters each pass is about to read and which grads it
  // has finished, module by module: embeddings, each layer, the final norm.
  void set_param_hooks(ParamHooks* hooks) { hooks_ = hooks; }
  void set_expert_param_hooks(ParamHooks* hooks) { expert_hooks_ = hooks; }

 private:
  // Embedding (pre_process) and layers; with post_process the final norm too (its output gathered
  // over TP under sequence parallelism, as the output layer needs every token).
  Tensor hidden_states(const Tensor& input, const ForwardContext& ctx, Saved& saved) const;
  // The transformer layers' forward (with full recomputation: only each group's input kept).
  Tensor forward_layers(Tensor x, const ForwardContext& lctx, const RotaryTables* rope, Saved& saved) const;
  // From the gradient of the layers' output down to the chunk's input.
  Tensor backward_layers(Tensor dx, Saved& saved) const;
  // The fused loss over some rows of logits (any tensor parallelism): losses, and with dloss
  // the logit gradient into dlogits (which may alias logits).
  void loss_on_rows(const Tensor& logits, const Tensor& targets, const Tensor& losses, const Tensor* dloss,
                    const Tensor* dlogits) const;

  GPTModel(const TransformerConfig& cfg, Device device, const ModelParallelConfig& par, const ModelChunkConfig& chunk,
           ParamAndGradBuffer* shared, ParamAndGradBuffer* shared_experts);

  TransformerConfig cfg_;
  ModelParallelConfig par_;
  ModelChunkConfig chunk_;
  std::unique_ptr<ParamAndGradBuffer> own_buf_;  // null when the buffer is shared
  ParamAndGradBuffer& buf_;
  std::unique_ptr<ParamAndGradBuffer> own_expert_buf_;
  ParamAndGradBuffer* expert_buf_ = nullptr;
  ParamAndGradBuffer::Id wte_ = -1, wpe_ = -1;
  ParamAndGradBuffer::Id output_ = -1;  // untied output layer (else wte_)
  ParamAndGradBuffer::Id output_weight() const { return output_ >= 0 ? output_ : wte_; }
  int64_t vocab_local_ = 0, vocab_start_ = 0;  // this rank's vocabulary shard
  std::vector<std::unique_ptr<TransformerLayer>> layers_;
  std::unique_ptr<Norm> final_ln_;
  RotaryTables rope_;  // RoPE's angle tables (RoPE models)
  // Registration-id ranges [first, end) of the modules, for the hooks.
  struct IdRange {
    int first = 0, end = 0;
  };
  IdRange embedding_ids_, final_ln_ids_;
  std::vector<IdRange> layer_ids_;
  std::vector<IdRange> layer_expert_ids_;  // in the expert buffer (empty ranges for dense layers)
  ParamHooks* hooks_ = nullptr;
  ParamHooks* expert_hooks_ = nullptr;
  void before_forward(IdRange r) const {
    if (hooks_) hooks_->before_forward(r.first, r.end);
  }
  void before_forward_layer(size_t i) const;
  void after_backward_layer(size_t i) const;
  // A module's grads are final: any a lazy round left unwritten are zeroed before anyone reads them.
  // With a WeightGradStore active this too waits for the module's deferred weight gradients.
  void after_backward(IdRange r) const;
};

}  // namespace mt
