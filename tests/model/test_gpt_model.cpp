// GPTModel: whole-model gradient against finite differences, parameter naming/counting,
// and init that depends only on seed and names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "grad_check.h"
#include "model/gpt_model.h"

using namespace mt;
using namespace mt::testing;

namespace {

TransformerConfig tiny() {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.ffn_hidden_size = 64;
  c.num_attention_heads = 4;
  c.seq_length = 8;
  c.max_position_embeddings = 8;
  c.vocab_size = 21;
  c.padded_vocab_size = 32;
  c.hidden_dropout = 0.0f;
  c.attention_dropout = 0.0f;
  c.init_method_std = 0.2f;
  return c;
}

Tensor tokens_tensor(int B, int T, int64_t vocab, uint64_t stream) {
  Tensor t = Tensor::empty({B, T}, DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = int32_t(philox_u32(3, stream, i) % uint64_t(vocab));
  return t;
}

}  // namespace

TEST(GPTModel, WholeModelGradientMatchesFiniteDifferences) {
  TransformerConfig c = tiny();
  GPTModel model(c, Device::cpu());
  model.init(11);
  const int B = 2, T = c.seq_length;
  Tensor tokens = tokens_tensor(B, T, c.vocab_size, 1), targets = tokens_tensor(B, T, c.vocab_size, 2);
  Tensor dloss = Tensor::empty({B * T}, DType::F32);
  fill(dloss, 1.0f / float(B * T));
  ForwardContext ctx{false, 1, 0};
  auto mean_loss = [&] {
    GPTModel::Saved s;
    Tensor l = model.forward_loss(tokens, targets, ctx, nullptr, s);
    double sum = 0;
    for (int64_t i = 0; i < l.numel(); ++i) sum += l.data<float>()[i];
    return sum / double(l.numel());
  };
  auto& buf = model.buffer();
  buf.zero_grads();
  {
    GPTModel::Saved s;
    model.forward_loss(tokens, targets, ctx, &dloss, s);
    model.backward(s);
  }
  int checked = 0;
  for (const auto& info : buf.infos()) {
    float* p = buf.param(buf.find(info.name)).data<float>();
    const float* g = buf.grad(buf.find(info.name)).data<float>();
    int64_t n = info.numel;
    if (info.name == "embedding.word_embeddings.weight") n = c.vocab_size * c.hidden_size;  // padding rows unused
    for (int s = 0; s < 6; ++s) {
      int64_t i = int64_t(philox_u32(5, rng_stream(info.name), s) % uint64_t(n));
      float keep = p[i];
      const float h = 1e-2f;
      p[i] = keep + h;
      double lp = mean_loss();
      p[i] = keep - h;
      double lm = mean_loss();
      p[i] = keep;
      double num = (lp - lm) / (2 * h);
      EXPECT_NEAR(g[i], num, 1e-4 + 2e-2 * std::fabs(num)) << info.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

// --cross-entropy-chunks: the output layer, the loss and the output layer's backward over K
// chunks of tokens (uneven: 16 tokens in 3 chunks of 6, 6, 4; one token per chunk) give the
// unchunked losses and gradients up to summation order, and never hold the whole logits.
TEST(GPTModel, ChunkedLossGivesTheUnchunkedLossesAndGradients) {
  const int B = 2;
  TransformerConfig c = tiny();
  Tensor tokens = tokens_tensor(B, c.seq_length, c.vocab_size, 1), targets = tokens_tensor(B, c.seq_length, c.vocab_size, 2);
  Tensor dloss = Tensor::empty({B * c.seq_length}, DType::F32);
  for (int64_t i = 0; i < dloss.numel(); ++i) dloss.data<float>()[i] = 0.05f + 0.01f * float(i % 5);
  auto run = [&](int chunks, std::vector<float>& losses, std::vector<float>& eval_losses) {
    TransformerConfig cc = c;
    cc.cross_entropy_chunks = chunks;
    GPTModel model(cc, Device::cpu());
    model.init(11);
    model.buffer().zero_grads();
    GPTModel::Saved s;
    Tensor l = model.forward_loss(tokens, targets, ForwardContext{false, 1, 0}, &dloss, s);
    EXPECT_EQ(s.dlogits.defined(), chunks == 1);
    EXPECT_EQ(s.dhidden.defined(), chunks > 1);
    model.backward(s);
    losses.assign(l.data<float>(), l.data<float>() + l.numel());
    GPTModel::Saved e;  // forward only (evaluation)
    Tensor le = model.forward_loss(tokens, targets, ForwardContext{false, 1, 0}, nullptr, e);
    eval_losses.assign(le.data<float>(), le.data<float>() + le.numel());
    const Tensor g = model.buffer().main_grads();
    return std::vector<float>(g.data<float>(), g.data<float>() + g.numel());
  };
  std::vector<float> ref_l, ref_e;
  const std::vector<float> ref_g = run(1, ref_l, ref_e);
  for (int chunks : {3, B * c.seq_length}) {
    std::vector<float> l, e;
    const std::vector<float> g = run(chunks, l, e);
    ASSERT_EQ(l.size(), ref_l.size());
    for (size_t i = 0; i < l.size(); ++i) {
      EXPECT_NEAR(l[i], ref_l[i], 1e-6f * std::fabs(ref_l[i])) << "chunks " << chunks << " token " << i;
      EXPECT_NEAR(e[i], ref_e[i], 1e-6f * std::fabs(ref_e[i])) << "chunks " << chunks << " token " << i;
    }
    double diff = 0, norm = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      diff += (double(g[i]) - ref_g[i]) * (double(g[i]) - ref_g[i]);
      norm += double(ref_g[i]) * ref_g[i];
    }
    EXPECT_LT(std::sqrt(diff / norm), 1e-6) << "chunks " << chunks;
  }
}

// Lazy gradient zeroing (the trainer's begin_grad_accumulation): the weight grads start stale
// (NaN here) and their first wgrad GEMM overwrites them; everything else is zeroed in one
// launch. Two microbatches then give the gradients of a zeroed buffer, bit for bit, with the
// loss unchunked and in chunks (the tied word embeddings: the output layer's GEMM writes them,
// the embedding's backward adds).
TEST(GPTModel, LazyGradZeroingGivesTheGradientsOfAZeroedBuffer) {
  TransformerConfig c = tiny();
  const int B = 2;
  Tensor dloss = Tensor::empty({B * c.seq_length}, DType::F32);
  fill(dloss, 0.05f);
  for (int chunks : {1, 3}) {
    c.cross_entropy_chunks = chunks;
    GPTModel model(c, Device::cpu());
    model.init(11);
    auto& buf = model.buffer();
    auto accumulate = [&] {
      for (uint64_t m = 0; m < 2; ++m) {
        GPTModel::Saved s;
        model.forward_loss(tokens_tensor(B, c.seq_length, c.vocab_size, 10 + m),
                           tokens_tensor(B, c.seq_length, c.vocab_size, 20 + m), ForwardContext{false, 1, m}, &dloss, s);
        model.backward(s);
      }
      const Tensor g = buf.main_grads();
      return std::vector<float>(g.data<float>(), g.data<float>() + g.numel());
    };
    buf.zero_grads();
    const std::vector<float> want = accumulate();
    fill(buf.main_grads(), std::numeric_limits<float>::quiet_NaN());
    buf.begin_grad_accumulation();
    EXPECT_EQ(buf.grad_beta(buf.find("decoder.final_layernorm.weight")), 1.0f);  // zeroed, not lazy
    const std::vector<float> got = accumulate();
    ASSERT_EQ(got.size(), want.size());
    int64_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
    EXPECT_EQ(differ, 0) << "chunks " << chunks;
  }
}

// A parameter no GEMM wrote in the round reads as zero once its module's backward ends.
TEST(GPTModel, UnwrittenLazyGradsAreZeroedBeforeTheyAreRead) {
  ParamAndGradBuffer buf;
  auto w = buf.add("w", {4, 4}, false), b = buf.add("b", {4}, true);
  buf.set_overwrites_first_grad(w);
  buf.allocate(DType::F32, Device::cpu());
  fill(buf.main_grads(), 5.0f);
  buf.begin_grad_accumulation();
  EXPECT_EQ(buf.grad(b).data<float>()[3], 0.0f);  // eager
  EXPECT_EQ(buf.grad(w).data<float>()[0], 5.0f);  // stale until written
  buf.zero_unwritten_grads(0, 2);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(buf.grad(w).data<float>()[i], 0.0f);
  EXPECT_EQ(buf.grad_beta(w), 1.0f);  // zeroed: the next GEMM adds
}

// --recompute-gelu with --recompute-num-layers 1: layer 0 keeps only fc1's output, layer 1 keeps
// GeLU's output too; the gradients are the same on CPU, bit for bit.
TEST(GPTModel, RecomputeNumLayersRecomputesGeluInTheFirstLayersOnly) {
  TransformerConfig c = tiny();
  Tensor tokens = tokens_tensor(2, c.seq_length, c.vocab_size, 1), targets = tokens_tensor(2, c.seq_length, c.vocab_size, 2);
  Tensor dloss = Tensor::empty({2 * c.seq_length}, DType::F32);
  fill(dloss, 0.1f);
  std::vector<std::vector<float>> grads;
  for (int n : {-1, 1}) {  // -1: keep everywhere
    TransformerConfig cc = c;
    cc.recompute_gelu = n > 0;
    cc.recompute_num_layers = std::max(n, 0);
    EXPECT_EQ(cc.layer_recomputes_gelu(0), n > 0);
    EXPECT_FALSE(cc.layer_recomputes_gelu(1));
    GPTModel model(cc, Device::cpu());
    model.init(11);
    model.buffer().zero_grads();
    GPTModel::Saved s;
    model.forward_loss(tokens, targets, ForwardContext{false, 1, 0}, &dloss, s);
    EXPECT_EQ(s.layers[0].mlp.fc2_in.x.defined(), n < 0);
    EXPECT_TRUE(s.layers[1].mlp.fc2_in.x.defined());
    model.backward(s);
    const Tensor g = model.buffer().main_grads();
    grads.emplace_back(g.data<float>(), g.data<float>() + g.numel());
  }
  EXPECT_EQ(grads[0], grads[1]);
}

TEST(GPTModel, PaddedVocabularyRowsGetNoGradient) {
  TransformerConfig c = tiny();
  GPTModel model(c, Device::cpu());
  model.init(11);
  Tensor tokens = tokens_tensor(2, c.seq_length, c.vocab_size, 1), targets = tokens_tensor(2, c.seq_length, c.vocab_size, 2);
  Tensor dloss = Tensor::empty({2 * c.seq_length}, DType::F32);
  fill(dloss, 0.1f);
  GPTModel::Saved s;
  model.forward_loss(tokens, targets, ForwardContext{true, 1, 0}, &dloss, s);
  model.backward(s);
  Tensor g = model.buffer().grad(model.buffer().find("embedding.word_embeddings.weight"));
  for (int64_t r = c.vocab_size; r < c.padded_vocab_size; ++r)
    for (int64_t j = 0; j < c.hidden_size; ++j) ASSERT_EQ(g.data<float>()[r * c.hidden_size + j], 0.0f);
}

TEST(GPTModel, ParameterNamesFollowMegatronCoreAndCountExcludesPadding) {
  TransformerConfig c = tiny();
  GPTModel model(c, Device::cpu());
  const auto& buf = model.buffer();
  for (const char* name : {"embedding.word_embeddings.weight", "embedding.position_embeddings.weight",
                           "decoder.layers.0.input_layernorm.weight", "decoder.layers.1.self_attention.linear_qkv.weight",
                           "decoder.layers.1.self_attention.linear_proj.bias", "decoder.layers.0.pre_mlp_layernorm.bias",
                           "decoder.layers.0.mlp.linear_fc1.weight", "decoder.layers.1.mlp.linear_fc2.weight",
                           "decoder.final_layernorm.weight"})
    EXPECT_GE(buf.find(name), 0) << name;
  const int64_t h = c.hidden_size, f = c.ffn_hidden_size, L = c.num_layers;
  const int64_t per_layer = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (f * h + f) + (h * f + h);
  EXPECT_EQ(model.num_parameters(), c.vocab_size * h + c.max_position_embeddings * h + L * per_layer + 2 * h);
}

TEST(GPTModel, InitDependsOnlyOnSeedAndNames) {
  TransformerConfig c = tiny();
  GPTModel a(c, Device::cpu()), b(c, Device::cpu());
  a.init(5);
  b.init(5);
  ASSERT_EQ(0, std::memcmp(a.buffer().params().raw(), b.buffer().params().raw(), a.buffer().params().nbytes()));
  // A deeper model shares the first layers' initial weights (names are the keys).
  TransformerConfig c3 = c;
  c3.num_layers = 3;
  GPTModel d(c3, Device::cpu());
  d.init(5);
  const char* name = "decoder.layers.1.mlp.linear_fc1.weight";
  Tensor pa = a.buffer().param(a.buffer().find(name)), pd = d.buffer().param(d.buffer().find(name));
  EXPECT_EQ(0, std::memcmp(pa.raw(), pd.raw(), pa.nbytes()));
}

TEST(GPTModel, OutputProjectionsAreScaledByDepth) {
  TransformerConfig c = tiny();
  c.init_method_std = 0.02f;
  c.hidden_size = 64;
  c.ffn_hidden_size = 256;
  c.num_layers = 8;
  GPTModel m(c, Device::cpu());
  m.init(1);
  auto stddev = [&](const char* name) {
    Tensor t = m.buffer().param(m.buffer().find(name));
    double s = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += double(t.data<float>()[i]) * t.data<float>()[i];
    return std::sqrt(s / double(t.numel()));
  };
  EXPECT_NEAR(stddev("decoder.layers.0.mlp.linear_fc1.weight"), 0.02, 0.001);
  EXPECT_NEAR(stddev("decoder.layers.0.mlp.linear_fc2.weight"), 0.02 / 4.0, 0.0003);  // 1/sqrt(2*8) = 1/4
  EXPECT_NEAR(stddev("decoder.layers.3.self_attention.linear_proj.weight"), 0.02 / 4.0, 0.0005);
}
