// Test tool for the Hugging Face parity test (tests/python/test_hf_gpt2_parity.py), not a user
// command: loads a transformers GPT-2 directory into our model and writes, for the batch in
// INPUT.safetensors ("input_ids", "labels": int64 [B, T]), a safetensors file with
//   "logits" [B, T, vocab] (fp32, eval mode), "loss" [1] (mean cross-entropy), and the gradient
//   of that loss for every parameter under "grad.<our name>" (our layout).
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/hf_gpt2.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "kernels/elementwise.h"

using namespace mt;

static Tensor to_i32(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i)
    out.data<int32_t>()[i] = t.dtype() == DType::I64 ? int32_t(t.data<int64_t>()[i]) : t.data<int32_t>()[i];
  return out;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: hf_gpt2_probe HF_DIR INPUT.safetensors OUTPUT.safetensors\n");
    return 2;
  }
  try {
    TransformerConfig cfg = read_hf_gpt2_config(argv[1], DType::F32, 128);
    cfg.hidden_dropout = cfg.attention_dropout = 0.0f;
    GPTModel model(cfg, Device::cpu());
    load_hf_gpt2_weights(argv[1], model);
    SafetensorsReader in(argv[2]);
    Tensor tokens = to_i32(in.get("input_ids")), labels = to_i32(in.get("labels"));
    cfg.seq_length = int(tokens.size(1));
    const int64_t B = tokens.size(0), T = tokens.size(1), N = B * T, V = cfg.vocab_size, Vp = cfg.padded_vocab_size;

    std::vector<std::pair<std::string, Tensor>> out;
    ForwardContext ctx{false, 0, 0};
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
    GPTModel::Saved s;
    Tensor losses = model.forward_loss(tokens, labels, ctx, &dloss, s);
    model.backward(s);
    double sum = 0;
    for (int64_t i = 0; i < N; ++i) sum += losses.data<float>()[i];
    Tensor loss = Tensor::empty({1}, DType::F32);
    loss.data<float>()[0] = float(sum / double(N));
    out.emplace_back("loss", loss);
    for (const auto& p : model.buffer().infos())
      out.emplace_back("grad." + p.name, model.buffer().grad(model.buffer().find(p.name)));
    write_safetensors(argv[3], out);
  } catch (const UserError& e) {
    std::fprintf(stderr, "hf_gpt2_probe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
