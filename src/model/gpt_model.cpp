#include "model/gpt_model.h"

#include "core/error.h"
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "model/linear.h"

namespace mt {

GPTModel::GPTModel(const GPTConfig& cfg, Device device, const ModelParallelConfig& par) : cfg_(cfg), par_(par) {
  MT_CHECK(cfg.hidden_size % cfg.num_attention_heads == 0);
  wte_ = buf_.add("embedding.word_embeddings.weight", {cfg.padded_vocab_size, cfg.hidden_size}, false);
  wpe_ = buf_.add("embedding.position_embeddings.weight", {cfg.max_position_embeddings, cfg.hidden_size}, false);
  for (int i = 0; i < cfg.num_layers; ++i)
    layers_.push_back(std::make_unique<TransformerLayer>(buf_, "decoder.layers." + std::to_string(i), cfg, i));
  final_ln_ = std::make_unique<LayerNorm>(buf_, "decoder.final_layernorm", cfg.hidden_size, cfg.layernorm_epsilon);
  buf_.set_bucketing(par.bucket_size, par.bucket_pad);
  buf_.allocate(cfg.params_dtype, device);
}

int64_t GPTModel::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : buf_.infos()) n += p.numel;
  return n - (cfg_.padded_vocab_size - cfg_.vocab_size) * cfg_.hidden_size;
}

void GPTModel::init(uint64_t seed) {
  init_normal(buf_, wte_, cfg_.init_method_std, seed);
  init_normal(buf_, wpe_, cfg_.init_method_std, seed);
  for (const auto& l : layers_) l->init(seed);
  final_ln_->init();
}

Tensor GPTModel::hidden_states(const Tensor& tokens, const ForwardContext& ctx, Saved& s) const {
  MT_CHECK(tokens.dtype() == DType::I32 && tokens.dim() == 2);
  int64_t B = tokens.size(0), T = tokens.size(1);
  MT_CHECK(T <= cfg_.max_position_embeddings, "sequence {} > max positions {}", T, cfg_.max_position_embeddings);
  s.tokens = tokens;
  Tensor wpe = buf_.param(wpe_);
  Tensor x = Tensor::empty({B, T, cfg_.hidden_size}, cfg_.params_dtype, tokens.device());
  embedding_forward(tokens, buf_.param(wte_), &wpe, 0, x);
  s.emb_dropout_p = ctx.training ? cfg_.hidden_dropout : 0.0f;
  s.seed = ctx.seed;
  s.emb_drop_stream = ctx.dropout_stream(rng_stream("dropout/embedding"));
  dropout_forward(x, x, s.emb_dropout_p, s.seed, s.emb_drop_stream);
  s.layers.resize(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) x = layers_[i]->forward(x, ctx, s.layers[i]);
  s.final_hidden = final_ln_->forward(x, s.final_ln);
  return s.final_hidden;
}

Tensor GPTModel::forward_logits(const Tensor& tokens, const ForwardContext& ctx, Saved& s) const {
  Tensor h = hidden_states(tokens, ctx, s);
  Tensor logits = Tensor::empty({h.size(0), cfg_.padded_vocab_size}, h.dtype(), h.device());
  gemm(h, false, buf_.param(wte_), true, logits);
  return logits.view({tokens.size(0), tokens.size(1), cfg_.padded_vocab_size});
}

Tensor GPTModel::forward_loss(const Tensor& tokens, const Tensor& targets, const ForwardContext& ctx,
                              const Tensor* dloss, Saved& s) const {
  int64_t N = tokens.numel();
  Tensor logits = forward_logits(tokens, ctx, s).view({N, cfg_.padded_vocab_size});
  Tensor losses = Tensor::empty({N}, DType::F32, tokens.device());
  Tensor* dlogits = nullptr;
  if (dloss) {
    s.dlogits = logits;  // the gradient overwrites the logits in the same pass
    dlogits = &s.dlogits;
  }
  cross_entropy_forward_backward(logits, targets.view({N}), cfg_.vocab_size, losses, dloss, dlogits);
  return losses;
}

void GPTModel::backward(Saved& s) const {
  MT_CHECK(s.dlogits.defined(), "backward without a loss gradient (forward_loss with dloss)");
  const int64_t N = s.dlogits.size(0), C = cfg_.hidden_size;
  // Tied output layer: logits = h wte^T.
  Tensor dh = Tensor::empty({N, C}, s.final_hidden.dtype(), s.final_hidden.device());
  gemm(s.dlogits, false, buf_.param(wte_), false, dh);
  gemm(s.dlogits, true, s.final_hidden, false, buf_.grad(wte_), 1.0f, 1.0f);
  s.dlogits = Tensor();
  s.final_hidden = Tensor();
  Tensor dx = final_ln_->backward(dh, s.final_ln).view({s.tokens.size(0), s.tokens.size(1), C});
  for (size_t i = layers_.size(); i-- > 0;) dx = layers_[i]->backward(dx, s.layers[i]);
  dropout_backward(dx, dx, s.emb_dropout_p, s.seed, s.emb_drop_stream);
  Tensor dwpe = buf_.grad(wpe_);
  embedding_backward(dx, s.tokens, 0, buf_.grad(wte_), &dwpe);
  s = Saved{};
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

}  // namespace mt
