#include "model/gpt_model.h"

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/vocab_parallel_cross_entropy.h"
#include "model/moe_metrics.h"
#include "model/tensor_parallel.h"
#include "model/weight_grad_store.h"

namespace mt {

GPTModel::GPTModel(const TransformerConfig& cfg, Device device, const ModelParallelConfig& par,
                   const ModelChunkConfig& chunk)
    : GPTModel(cfg, device, par, chunk, nullptr, nullptr) {
  buf_.set_bucketing(par.bucket_size, par.bucket_pad);
  buf_.allocate(cfg.params_dtype, device);
  if (own_expert_buf_) {
    own_expert_buf_->set_bucketing(par.bucket_size, par.expert_bucket_pad);
    own_expert_buf_->allocate(cfg.params_dtype, device);
  }
}

GPTModel::GPTModel(const TransformerConfig& cfg, Device device, const ModelParallelConfig& par,
                   const ModelChunkConfig& chunk, ParamAndGradBuffer& buffer, ParamAndGradBuffer* expert_buffer)
    : GPTModel(cfg, device, par, chunk, &buffer, expert_buffer) {}

GPTModel::GPTModel(const TransformerConfig& cfg, Device device, const ModelParallelConfig& par,
                   const ModelChunkConfig& chunk, ParamAndGradBuffer* shared, ParamAndGradBuffer* shared_experts)
    : cfg_(cfg),
      par_(par),
      chunk_(chunk),
      own_buf_(shared ? nullptr : std::make_unique<ParamAndGradBuffer>()),
      buf_(shared ? *shared : *own_buf_) {
  const int tp = par.tp_size();
  if (chunk_.num_layers < 0) chunk_.num_layers = cfg.num_layers - chunk_.first_layer;
  MT_CHECK(chunk_.first_layer >= 0 && chunk_.first_layer + chunk_.num_layers <= cfg.num_layers,
           "layers [{}, +{}) of a {}-layer model", chunk_.first_layer, chunk_.num_layers, cfg.num_layers);
  MT_CHECK(cfg.num_attention_heads % tp == 0 && cfg.query_groups() % tp == 0,
           "{} heads in {} query groups do not split over {} ranks", cfg.num_attention_heads, cfg.query_groups(), tp);
  MT_CHECK(cfg.padded_vocab_size % tp == 0, "padded vocabulary {} does not split over {} ranks", cfg.padded_vocab_size,
           tp);
  // VocabParallelEmbedding: rank r holds vocabulary rows [r Vp/tp, (r+1) Vp/tp); the output
  // layer (tied to the same shard, or its own) holds the same rows.
  vocab_local_ = cfg.padded_vocab_size / tp;
  vocab_start_ = int64_t(par.tp_rank()) * vocab_local_;
  const bool tied = !cfg.untie_embeddings_and_output_weights;
  auto add_word_embeddings = [&] {
    wte_ = buf_.add_shard("embedding.word_embeddings.weight", {vocab_local_, cfg.hidden_size},
                          {cfg.padded_vocab_size, cfg.hidden_size}, 0, vocab_start_, false);
    // The output layer's wgrad GEMM (grad_beta) writes the tied gradient before the embedding's
    // backward adds to it.
    if (tied && chunk_.post_process) buf_.set_overwrites_first_grad(wte_);
  };
  const auto next_id = [&] { return int(buf_.infos().size()); };
  if (chunk_.pre_process) {
    add_word_embeddings();
    if (cfg.learned_positions())
      wpe_ = buf_.add("embedding.position_embeddings.weight", {cfg.max_position_embeddings, cfg.hidden_size}, false);
  }
  embedding_ids_ = {0, next_id()};
  bool any_moe = false;
  for (int i = chunk_.first_layer; i < chunk_.first_layer + chunk_.num_layers; ++i) any_moe |= cfg.is_moe_layer(i);
  if (any_moe) {
    MT_CHECK(!shared || shared_experts, "an MoE chunk sharing a buffer needs the shared expert buffer too");
    if (!shared) own_expert_buf_ = std::make_unique<ParamAndGradBuffer>();
    expert_buf_ = shared ? shared_experts : own_expert_buf_.get();
  }
  const auto next_expert_id = [&] { return expert_buf_ ? int(expert_buf_->infos().size()) : 0; };
  for (int i = chunk_.first_layer; i < chunk_.first_layer + chunk_.num_layers; ++i) {
    const int first = next_id(), first_expert = next_expert_id();
    layers_.push_back(std::make_unique<TransformerLayer>(buf_, "decoder.layers." + std::to_string(i), cfg,
                                                         gpt_layer_spec(cfg, i), i, par, expert_buf_));
    layer_ids_.push_back({first, next_id()});
    layer_expert_ids_.push_back({first_expert, next_expert_id()});
  }
  final_ln_ids_ = {next_id(), next_id()};
  if (chunk_.post_process) {
    final_ln_ = std::make_unique<Norm>(buf_, "decoder.final_layernorm", cfg.hidden_size, cfg.normalization,
                                       cfg.layernorm_epsilon, par.sequence_parallel);
    if (!tied) {
      output_ = buf_.add_shard("output_layer.weight", {vocab_local_, cfg.hidden_size},
                               {cfg.padded_vocab_size, cfg.hidden_size}, 0, vocab_start_, false);
      buf_.set_overwrites_first_grad(output_);
    } else if (!chunk_.pre_process) {
      add_word_embeddings();  // this stage's copy of the tied weight
      buf_.set_pipeline_duplicate(wte_, true);
    }
    final_ln_ids_.end = next_id();
  }
  if (cfg.uses_rope()) rope_ = rope_tables(cfg, cfg.seq_length, device);
}

int64_t GPTModel::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : buf_.infos()) {
    if (p.pipeline_duplicate) continue;
    n += shape_numel(p.global_shape);
    const bool vocab_rows = p.name == "embedding.word_embeddings.weight" || p.name == "output_layer.weight";
    if (vocab_rows) n -= (cfg_.padded_vocab_size - cfg_.vocab_size) * cfg_.hidden_size;
  }
  // Expert weights: this rank holds E / EP of each MoE layer's experts (all of one shape).
  const int ep = par_.ep ? par_.ep->size() : 1;
  if (expert_buf_)
    for (const auto& p : expert_buf_->infos()) n += shape_numel(p.global_shape) * ep;
  return n;
}

int64_t GPTModel::num_active_parameters() const {
  if (!expert_buf_) return num_parameters();
  const int ep = par_.ep ? par_.ep->size() : 1;
  int64_t experts = 0;
  for (const auto& p : expert_buf_->infos()) experts += shape_numel(p.global_shape) * ep;
  return num_parameters() - experts + experts / cfg_.num_moe_experts * cfg_.moe_router_topk;
}

std::vector<std::pair<std::string, Tensor>> GPTModel::persistent_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& l : layers_)
    if (l->moe() && l->moe()->router().expert_bias().defined())
      out.emplace_back(l->moe()->router().expert_bias_name(), l->moe()->router().expert_bias());
  return out;
}

void GPTModel::update_expert_bias(const MoEMetrics& global) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    const MoELayer* moe = layers_[i]->moe();
    const size_t number = size_t(chunk_.first_layer) + i;
    if (!moe || !moe->router().expert_bias().defined() || number >= global.layers.size()) continue;
    moe->router().update_expert_bias(global.layers[number].tokens_per_expert);
  }
}

void GPTModel::init(uint64_t seed) {
  // Vocabulary padding rows are zero: masked out of the softmax, they get no gradient and stay
  // zero, so checkpoints need not store them (the padding differs between TP sizes).
  const int64_t real_rows = std::min(std::max(cfg_.vocab_size - vocab_start_, int64_t(0)), vocab_local_);
  if (wte_ >= 0) {
    init_normal(buf_, wte_, cfg_.init_method_std, seed);
    buf_.param(wte_).narrow0(real_rows, vocab_local_ - real_rows).zero_();
  }
  if (wpe_ >= 0) init_normal(buf_, wpe_, cfg_.init_method_std, seed);
  for (const auto& l : layers_) l->init(seed);
  if (final_ln_) final_ln_->init();
  if (output_ >= 0) {
    init_normal(buf_, output_, cfg_.init_method_std, seed);
    buf_.param(output_).narrow0(real_rows, vocab_local_ - real_rows).zero_();
  }
}

Tensor GPTModel::hidden_states(const Tensor& input, const ForwardContext& ctx, Saved& s) const {
  const int tp = par_.tp_size();
  Tensor x;
  if (chunk_.pre_process) {
    const Tensor& tokens = input;
    MT_CHECK(tokens.dtype() == DType::I32 && tokens.dim() == 2);
    s.batch = tokens.size(0);
    s.seq = tokens.size(1);
    MT_CHECK(s.seq <= cfg_.max_position_embeddings, "sequence {} > max positions {}", s.seq,
             cfg_.max_position_embeddings);
    s.tokens = tokens;
    Tensor wpe = wpe_ >= 0 ? buf_.param(wpe_) : Tensor();
    x = Tensor::empty({s.batch, s.seq, cfg_.hidden_size}, cfg_.params_dtype, tokens.device());
    // Each tp rank embeds the tokens of its vocabulary shard (zero elsewhere); the position
    // embedding joins on tp rank 0 only, and the sum over TP completes every row. With explicit
    // positions its rows are gathered per token (the embedding kernel as a row gather).
    before_forward(embedding_ids_);
    const bool gather_positions = ctx.positions && wpe.defined();
    embedding_forward(tokens, buf_.param(wte_), par_.tp_rank() == 0 && wpe.defined() && !gather_positions ? &wpe : nullptr,
                      vocab_start_, x);
    if (gather_positions && par_.tp_rank() == 0) {
      const int64_t n = s.batch * s.seq, C = cfg_.hidden_size;
      Tensor pe = Tensor::empty({1, n, C}, cfg_.params_dtype, tokens.device());
      embedding_forward(ctx.positions->positions().view({1, n}), wpe, nullptr, 0, pe);
      add(x.view({1, n, C}), pe, x.view({1, n, C}));
    }
    if (tp > 1) {
      if (par_.sequence_parallel)
        x = reduce_scatter_tokens(x.view({s.batch * s.seq, cfg_.hidden_size}), *par_.tp);  // [B T / tp, C]
      else
        par_.tp->all_reduce(x);
    }
    s.emb_dropout_p = ctx.training ? cfg_.hidden_dropout : 0.0f;
    s.seed = ctx.seed;
    s.emb_drop_stream = ctx.dropout_stream(rng_stream("dropout/embedding"));
    s.emb_drop_runs = hidden_element_runs(par_, x.numel(), cfg_.hidden_size, ctx.positions);
    hidden_dropout_forward(x, s.emb_dropout_p, s.seed, s.emb_drop_stream, s.emb_drop_runs);
  } else {
    MT_CHECK(ctx.batch > 0 && ctx.seq > 0, "a chunk without the embedding needs the token grid in ctx");
    s.batch = ctx.batch;
    s.seq = ctx.seq;
    x = input;
  }
  if (ctx.positions) s.positions = *ctx.positions;
  const int64_t full_seq = ctx.positions ? ctx.positions->seq : s.seq;
  MT_CHECK(!rope_.cos.defined() || full_seq <= rope_.cos.size(0), "sequence {} > RoPE's {} positions", full_seq,
           rope_.cos.size(0));
  const RotaryTables* rope = rope_.cos.defined() ? &rope_ : nullptr;
  if (rope && ctx.positions) {  // the tables' rows of each token's position
    s.rope = rope_rows(rope_, ctx.positions->positions());
    rope = &s.rope;
  }
  ForwardContext lctx = ctx;
  lctx.batch = s.batch;
  lctx.seq = s.seq;
  x = forward_layers(x, lctx, rope, s);
  if (!chunk_.post_process) return x;
  before_forward(final_ln_ids_);
  s.final_hidden = final_ln_->forward(x, s.final_ln);
  // The output layer is column-parallel over the vocabulary: it needs every token.
  if (tp > 1 && par_.sequence_parallel) s.final_hidden = gather_tokens(s.final_hidden, *par_.tp);
  return s.final_hidden;
}

Tensor GPTModel::forward(const Tensor& input, const ForwardContext& ctx, Saved& s) const {
  MT_CHECK(!chunk_.post_process, "GPTModel::forward: a post-process chunk ends in forward_loss or forward_logits");
  return hidden_states(input, ctx, s);
}

Tensor GPTModel::forward_logits(const Tensor& input, const ForwardContext& ctx, Saved& s) const {
  MT_CHECK(chunk_.post_process, "GPTModel::forward_logits: this chunk has no output layer");
  Tensor h = hidden_states(input, ctx, s);
  Tensor logits = Tensor::empty({h.size(0), vocab_local_}, h.dtype(), h.device());
  gemm(h, false, buf_.param(output_weight()), true, logits);
  return logits.view({s.batch, s.seq, vocab_local_});
}

Tensor GPTModel::forward_loss(const Tensor& input, const Tensor& targets, const ForwardContext& ctx,
                              const Tensor* dloss, Saved& s) const {
  MT_CHECK(chunk_.post_process, "GPTModel::forward_loss: this chunk has no output layer");
  const int64_t N = targets.numel();
  Tensor losses = Tensor::empty({N}, DType::F32, targets.device());
  Tensor t = targets.view({N});
  const int64_t chunks = std::clamp<int64_t>(cfg_.cross_entropy_chunks, 1, N);
  if (chunks == 1) {
    Tensor logits = forward_logits(input, ctx, s).view({N, vocab_local_});
    if (dloss) s.dlogits = logits;  // the gradient overwrites the logits in the same pass
    loss_on_rows(logits, t, losses, dloss, dloss ? &s.dlogits : nullptr);
    return losses;
  }
  Tensor h = hidden_states(input, ctx, s);
  Tensor wout = buf_.param(output_weight());
  const int64_t rows = (N + chunks - 1) / chunks;
  Tensor logits_buf = Tensor::empty({rows, vocab_local_}, h.dtype(), h.device());
  if (dloss) s.dhidden = Tensor::empty(h.shape(), h.dtype(), h.device());
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    Tensor hc = h.narrow0(r0, n), logits = logits_buf.narrow0(0, n);
    gemm(hc, false, wout, true, logits);
    if (!dloss) {
      loss_on_rows(logits, t.narrow0(r0, n), losses.narrow0(r0, n), nullptr, nullptr);
      continue;
    }
    Tensor dl = dloss->narrow0(r0, n);
    loss_on_rows(logits, t.narrow0(r0, n), losses.narrow0(r0, n), &dl, &logits);
    // The output layer's backward for these tokens (as in backward() with unchunked logits).
    gemm(logits, false, wout, false, s.dhidden.narrow0(r0, n));
    gemm(logits, true, hc, false, buf_.grad(output_weight()), 1.0f, buf_.grad_beta(output_weight()));
  }
  s.final_hidden = Tensor();
  return losses;
}

void GPTModel::loss_on_rows(const Tensor& logits, const Tensor& t, const Tensor& losses, const Tensor* dloss,
                            const Tensor* dlogits) const {
  const int64_t N = logits.size(0);
  if (par_.tp_size() == 1) {
    cross_entropy_forward_backward(logits, t, cfg_.vocab_size, losses, dloss, dlogits);
    return;
  }
  // Vocab-parallel cross-entropy: the row max and the sums of exps and target logits are
  // all-reduced over TP; the logits are never gathered.
  Communicator& tp = *par_.tp;
  const Device dev = logits.device();
  Tensor row_max = Tensor::empty({N}, DType::F32, dev);
  Tensor sums = Tensor::empty({2 * N}, DType::F32, dev);
  Tensor sum_exp = sums.flat_slice(0, N, {N}), target_logit = sums.flat_slice(N, N, {N});
  vocab_parallel_ce_max(logits, vocab_start_, cfg_.vocab_size, row_max);
  tp.all_reduce(row_max, ReduceOp::Max);
  vocab_parallel_ce_sum_exp(logits, t, vocab_start_, cfg_.vocab_size, row_max, sum_exp, target_logit);
  tp.all_reduce(sums);
  vocab_parallel_ce_loss_grad(logits, t, vocab_start_, cfg_.vocab_size, row_max, sum_exp, target_logit, losses, dloss,
                              dlogits);
}

Tensor GPTModel::backward(Saved& s) const {
  MT_CHECK(s.dlogits.defined() || s.dhidden.defined(), "backward without a loss gradient (forward_loss with dloss)");
  const int64_t C = cfg_.hidden_size;
  const int tp = par_.tp_size();
  const bool sp = tp > 1 && par_.sequence_parallel;
  Tensor dh = s.dhidden;  // chunked loss: the output layer's backward already ran
  if (!dh.defined()) {
    // Tied output layer: logits = h wte^T (this rank's vocabulary columns).
    dh = Tensor::empty({s.dlogits.size(0), C}, s.final_hidden.dtype(), s.final_hidden.device());
    gemm(s.dlogits, false, buf_.param(output_weight()), false, dh);
    const ParamAndGradBuffer::Id w = output_weight();
    // Deferred (zero-bubble schedule): the logit gradient and the hidden states move into the
    // GEMM; nothing else reads them.
    run_or_defer_weight_grad([this, w, dl = s.dlogits, h = s.final_hidden] {
      gemm(dl, true, h, false, buf_.grad(w), 1.0f, buf_.grad_beta(w));
    });
  }
  const int64_t N = dh.size(0);
  s.dlogits = Tensor();
  s.dhidden = Tensor();
  s.final_hidden = Tensor();
  if (tp > 1) {  // dh is a partial sum over the vocabulary shards
    if (sp)
      dh = reduce_scatter_tokens(dh, *par_.tp);
    else
      par_.tp->all_reduce(dh);
  }
  const Shape act_shape = sp ? Shape{N / tp, C} : Shape{s.batch, s.seq, C};
  Tensor dx = final_ln_->backward(dh, s.final_ln).view(act_shape);
  after_backward(final_ln_ids_);
  return backward_layers(dx, s);
}

Tensor GPTModel::backward(const Tensor& doutput, Saved& s) const {
  MT_CHECK(!chunk_.post_process, "GPTModel::backward(doutput): a post-process chunk's backward starts at its loss");
  return backward_layers(doutput, s);
}

// Full recomputation (Megatron's TransformerBlock._checkpointed_forward): a recomputed group's
// layers run forward with throw-away Saved, keeping only the group's input; backward reruns the
// group's forward from it, with the same context (dropout masks are keyed by site and
// microbatch, so they come out the same), just before the group's backward.
Tensor GPTModel::forward_layers(Tensor x, const ForwardContext& lctx, const RotaryTables* rope, Saved& s) const {
  const int n = int(layers_.size());
  s.layers.resize(size_t(n));
  s.recompute_inputs.assign(size_t(n), Tensor());
  s.recompute_ctx = lctx;
  s.recompute_ctx.moe_metrics = nullptr;
  for (int i = 0; i < n; ++i) {
    before_forward_layer(size_t(i));
    int first = 0, last = 0;
    if (!cfg_.full_recompute_group(i, n, &first, &last)) {
      x = layers_[size_t(i)]->forward(x, lctx, rope, s.layers[size_t(i)]);
      continue;
    }
    if (i == first) s.recompute_inputs[size_t(i)] = x;
    TransformerLayer::Saved dropped;
    x = layers_[size_t(i)]->forward(x, lctx, rope, dropped);
  }
  return x;
}

Tensor GPTModel::backward_layers(Tensor dx, Saved& s) const {
  const int64_t C = cfg_.hidden_size;
  const int n = int(layers_.size());
  for (size_t i = layers_.size(); i-- > 0;) {
    int first = 0, last = 0;
    if (cfg_.full_recompute_group(int(i), n, &first, &last) && int(i) == last) {
      Tensor x = s.recompute_inputs[size_t(first)];
      s.recompute_inputs[size_t(first)] = Tensor();
      const RotaryTables* rope = s.rope.per_token ? &s.rope : rope_.cos.defined() ? &rope_ : nullptr;
      for (int j = first; j <= last; ++j) x = layers_[size_t(j)]->forward(x, s.recompute_ctx, rope, s.layers[size_t(j)]);
    }
    dx = layers_[i]->backward(dx, s.layers[i]);
    after_backward_layer(i);
  }
  if (!chunk_.pre_process) {
    s = Saved{};
    return dx;
  }
  hidden_dropout_backward(dx, dx, s.emb_dropout_p, s.seed, s.emb_drop_stream, s.emb_drop_runs);
  if (par_.tp_size() > 1 && par_.sequence_parallel) dx = gather_tokens(dx, *par_.tp).view({s.batch, s.seq, C});
  // Every tp rank has the full dx: its word-embedding shard's rows, and the whole (replicated)
  // position-embedding grad (scattered by the tokens' positions when they are explicit).
  Tensor dwpe = wpe_ >= 0 ? buf_.grad(wpe_) : Tensor();
  buf_.zero_unwritten_grads(embedding_ids_.first, embedding_ids_.end);  // the embedding adds to them
  const bool scatter_positions = dwpe.defined() && s.positions.defined();
  embedding_backward(dx, s.tokens, vocab_start_, buf_.grad(wte_), dwpe.defined() && !scatter_positions ? &dwpe : nullptr);
  if (scatter_positions) {
    const int64_t n = s.batch * s.seq;
    embedding_backward(dx.view({1, n, C}), s.positions.positions().view({1, n}), 0, dwpe, nullptr);
  }
  after_backward(embedding_ids_);
  s = Saved{};
  return Tensor();
}

void GPTModel::before_forward_layer(size_t i) const {
  before_forward(layer_ids_[i]);
  const IdRange e = layer_expert_ids_[i];
  if (expert_hooks_ && e.end > e.first) expert_hooks_->before_forward(e.first, e.end);
}

void GPTModel::after_backward_layer(size_t i) const {
  after_backward(layer_ids_[i]);
  const IdRange e = layer_expert_ids_[i];
  if (e.end > e.first)
    run_or_defer_weight_grad([this, e] {
      expert_buf_->zero_unwritten_grads(e.first, e.end);
      if (expert_hooks_) expert_hooks_->after_backward(e.first, e.end);
    });
}

void GPTModel::after_backward(IdRange r) const {
  run_or_defer_weight_grad([this, r] {
    buf_.zero_unwritten_grads(r.first, r.end);
    if (!hooks_) return;
    // A shared embedding's gradient is final only once summed with the other stage's (in
    // finalize_model_grads): its data-parallel bucket waits for finish_grad_sync.
    const int shared = shared_embedding();
    if (shared < r.first || shared >= r.end) {
      hooks_->after_backward(r.first, r.end);
      return;
    }
    if (shared > r.first) hooks_->after_backward(r.first, shared);
    if (shared + 1 < r.end) hooks_->after_backward(shared + 1, r.end);
  });
}

void GPTModel::finish_grad_sync() const {
  if (par_.tp_size() == 1) return;
  std::vector<ParamAndGradBuffer::Id> ids;
  int64_t n = 0;
  for (int id = 0; id < int(buf_.infos().size()); ++id)
    if (buf_.info(id).sequence_parallel) {
      ids.push_back(id);
      n += buf_.info(id).numel;
    }
  if (ids.empty()) return;
  // Pack, reduce once, unpack (the parameters are scattered over the buffer).
  Tensor packed = Tensor::empty({n}, DType::F32, buf_.main_grads().device());
  int64_t off = 0;
  for (auto id : ids) {
    const int64_t k = buf_.info(id).numel;
    packed.flat_slice(off, k, {k}).copy_from(buf_.grad(id).view({k}));
    off += k;
  }
  par_.tp->all_reduce(packed);
  off = 0;
  for (auto id : ids) {
    const int64_t k = buf_.info(id).numel;
    buf_.grad(id).view({k}).copy_from(packed.flat_slice(off, k, {k}));
    off += k;
  }
}

KVCache GPTModel::allocate_kv_cache(int64_t batch, int64_t capacity) const {
  MT_CHECK(chunk_.pre_process && chunk_.post_process, "GPTModel: generation needs the whole model in one chunk");
  MT_CHECK(batch > 0 && capacity > 0, "KV cache of {} sequences x {} tokens", batch, capacity);
  MT_CHECK(!cfg_.learned_positions() || capacity <= cfg_.max_position_embeddings,
           "KV cache of {} positions > max positions {}", capacity, cfg_.max_position_embeddings);
  const Device dev = buf_.params().device();
  const int64_t groups = cfg_.query_groups() / par_.tp_size();
  KVCache c;
  c.batch = batch;
  c.capacity = capacity;
  for (size_t i = 0; i < layers_.size(); ++i) {
    c.key.push_back(Tensor::zeros({batch, capacity, groups, cfg_.head_dim()}, cfg_.params_dtype, dev));
    c.value.push_back(Tensor::zeros({batch, capacity, groups, cfg_.head_dim()}, cfg_.params_dtype, dev));
  }
  if (rope_.cos.defined()) c.rope = rope_tables(cfg_, capacity, dev);
  c.lengths.assign(size_t(batch), 0);
  return c;
}

// Per-token positions differ between sequences, so the position-dependent tables are gathered
// per token with the embedding kernel (a row gather): the learned position embeddings, RoPE's cos
// and sin rows, and at the end the hidden state of each row's last new token. The step's int32
// indices (starts, positions, last rows) reach the device in one copy.
Tensor GPTModel::forward_inference(const Tensor& tokens, const std::vector<int32_t>& num_tokens, KVCache& cache) const {
  MT_CHECK(chunk_.pre_process && chunk_.post_process, "GPTModel: generation needs the whole model in one chunk");
  MT_CHECK(tokens.dtype() == DType::I32 && tokens.dim() == 2, "forward_inference: tokens {} must be int32 [B, T]",
           tokens.str());
  const int64_t B = tokens.size(0), T = tokens.size(1), C = cfg_.hidden_size;
  MT_CHECK(B == cache.batch && int64_t(num_tokens.size()) == B && cache.key.size() == layers_.size(),
           "forward_inference: {} sequences, {} token counts, a cache for {}", B, num_tokens.size(), cache.batch);
  const Device dev = buf_.params().device();
  MT_CHECK(tokens.is_contiguous() && (tokens.device() == dev || !tokens.is_cuda()),
           "forward_inference: tokens {} on the host or the model's device {}", tokens.str(), dev.str());
  // Tokens on the host travel with the indices: [starts B | positions B T | last rows B | tokens B T].
  const bool upload_tokens = !tokens.is_cuda() && dev.is_cuda();
  Tensor host = Tensor::empty({B + B * T + B + (upload_tokens ? B * T : 0)}, DType::I32);
  int32_t* idx = host.data<int32_t>();
  if (upload_tokens) std::copy_n(tokens.data<int32_t>(), B * T, idx + B + B * T + B);
  bool from_empty = true;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t start = cache.lengths[size_t(b)], n = num_tokens[size_t(b)];
    MT_CHECK(n >= 1 && n <= T, "forward_inference: sequence {} has {} new tokens of {}", b, n, T);
    MT_CHECK(start + T <= cache.capacity, "forward_inference: sequence {} at {} + {} tokens > cache of {}", b, start,
             T, cache.capacity);
    from_empty = from_empty && start == 0;
    idx[b] = start;
    for (int64_t t = 0; t < T; ++t) idx[B + b * T + t] = start + int32_t(t);
    idx[B + B * T + b] = int32_t(b * T + n - 1);
  }
  const Tensor ids = host.to(dev);
  InferenceStep step;
  step.start = ids.flat_slice(0, B, {B});
  step.from_empty = from_empty;
  const Tensor positions = ids.flat_slice(B, B * T, {1, B * T});
  const Tensor last = ids.flat_slice(B + B * T, B, {1, B});
  const Tensor token_ids = upload_tokens ? ids.flat_slice(B + B * T + B, B * T, {B, T}) : tokens;

  Tensor x = Tensor::empty({B, T, C}, cfg_.params_dtype, dev);
  before_forward(embedding_ids_);
  embedding_forward(token_ids, buf_.param(wte_), nullptr, vocab_start_, x);
  if (wpe_ >= 0 && par_.tp_rank() == 0) {  // as in training: tp rank 0 adds the positions
    Tensor pe = Tensor::empty({1, B * T, C}, cfg_.params_dtype, dev);
    embedding_forward(positions, buf_.param(wpe_), nullptr, 0, pe);
    add(x.view({1, B * T, C}), pe, x.view({1, B * T, C}));
  }
  if (par_.tp_size() > 1) par_.tp->all_reduce(x);
  if (cache.rope.cos.defined()) {
    const RotaryTables rows = rope_rows(cache.rope, positions);
    step.cos = rows.cos;
    step.sin = rows.sin;
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    before_forward_layer(i);
    x = layers_[i]->forward_inference(x, step, cache.key[i], cache.value[i]);
  }
  Tensor h = x.view({B * T, C});
  if (T > 1) {
    Tensor rows = Tensor::empty({1, B, C}, h.dtype(), dev);
    embedding_forward(last, h, nullptr, 0, rows);
    h = rows.view({B, C});
  }
  before_forward(final_ln_ids_);
  Norm::Saved ln;
  Tensor hn = final_ln_->forward(h, ln);
  Tensor logits = Tensor::empty({B, vocab_local_}, hn.dtype(), dev);
  gemm(hn, false, buf_.param(output_weight()), true, logits);
  for (int64_t b = 0; b < B; ++b) cache.lengths[size_t(b)] += num_tokens[size_t(b)];
  return logits;
}

}  // namespace mt
