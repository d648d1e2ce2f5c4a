#pragma once
// Shared by the test tools that compare our model with PyTorch / transformers (hf_probe,
// model_probe): for a batch, the logits over the real vocabulary [B, T, V] (eval mode), the mean
// cross-entropy [1], and its gradient for every parameter ("grad.<our name>", global shape; a
// single-rank model), written to one safetensors file.
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/safetensors.h"
#include "kernels/elementwise.h"
#include "model/gpt_model.h"

namespace mt::probe {

// int32 copy of token ids stored as int64 or int32.
inline Tensor token_ids(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i)
    out.data<int32_t>()[i] = t.dtype() == DType::I64 ? int32_t(t.data<int64_t>()[i]) : t.data<int32_t>()[i];
  return out;
}

inline void write_output(GPTModel& model, const Tensor& tokens, const Tensor& labels, const std::string& path) {
  const TransformerConfig& cfg = model.config();
  const int64_t B = tokens.size(0), T = tokens.size(1), N = B * T, V = cfg.vocab_size, Vp = cfg.padded_vocab_size;
  std::vector<std::pair<std::string, Tensor>> out;
  const ForwardContext ctx{false, 0, 0};
  {
    GPTModel::Saved s;
    Tensor logits = model.forward_logits(tokens, ctx, s);
    Tensor real = Tensor::empty({B, T, V}, DType::F32);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t v = 0; v < V; ++v) real.data<float>()[n * V + v] = logits.data<float>()[n * Vp + v];
    out.emplace_back("logits", real);
  }
  Tensor dloss = Tensor::empty({N}, DType::F32);
  fill(dloss, 1.0f / float(N));
  ParamAndGradBuffer& buf = model.buffer();
  buf.zero_grads();
  GPTModel::Saved s;
  Tensor losses = model.forward_loss(tokens, labels, ctx, &dloss, s);
  model.backward(s);
  double sum = 0;
  for (int64_t i = 0; i < N; ++i) sum += losses.data<float>()[i];
  Tensor loss = Tensor::empty({1}, DType::F32);
  loss.data<float>()[0] = float(sum / double(N));
  out.emplace_back("loss", loss);
  for (const auto& p : buf.infos()) out.emplace_back("grad." + p.name, buf.grad(buf.find(p.name)).view(p.global_shape));
  write_safetensors(path, out);
}

}  // namespace mt::probe
