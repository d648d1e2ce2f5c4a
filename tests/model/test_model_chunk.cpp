// Model chunks (what pipeline stages hold): a model cut into a pre-process chunk (embedding and
// the first layers) and a post-process chunk (the remaining layers under their global numbers,
// final norm, output layer, loss), run one after the other, computes what the whole model does:
// the same initial weights by name, the same losses and the same gradients bit for bit (the tied
// word embedding's two copies sum to the whole model's gradient), with dropout on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "core/rng.h"
#include "kernels/elementwise.h"
#include "model/gpt_model.h"

using namespace mt;

namespace {

TransformerConfig tiny(bool llama) {
  TransformerConfig c;
  c.num_layers = 4;
  c.hidden_size = 16;
  c.ffn_hidden_size = 32;
  c.num_attention_heads = 4;
  c.seq_length = 8;
  c.max_position_embeddings = 8;
  c.vocab_size = 21;
  c.padded_vocab_size = 32;
  c.hidden_dropout = 0.1f;
  c.attention_dropout = 0.1f;
  c.init_method_std = 0.2f;
  if (llama) {
    c.normalization = Normalization::RMSNorm;
    c.gated_linear_unit = true;
    c.activation = Activation::Silu;
    c.num_query_groups = 2;
    c.add_bias_linear = false;
    c.position_embedding_type = PositionEmbedding::Rope;
    c.untie_embeddings_and_output_weights = true;
  }
  return c;
}

Tensor tokens_tensor(int B, int T, int64_t vocab, uint64_t stream) {
  Tensor t = Tensor::empty({B, T}, DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = int32_t(philox_u32(3, stream, i) % uint64_t(vocab));
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), size_t(a.nbytes())) == 0;
}

void chunks_compute_the_whole_model(bool llama) {
  const TransformerConfig c = tiny(llama);
  const int B = 2, T = c.seq_length;
  const Tensor tokens = tokens_tensor(B, T, c.vocab_size, 1), targets = tokens_tensor(B, T, c.vocab_size, 2);
  Tensor dloss = Tensor::empty({B * T}, DType::F32);
  fill(dloss, 1.0f / float(B * T));
  const ForwardContext ctx{true, 7, 5};

  GPTModel whole(c, Device::cpu());
  whole.init(11);
  whole.buffer().zero_grads();
  GPTModel::Saved s;
  const Tensor want = whole.forward_loss(tokens, targets, ctx, &dloss, s);
  EXPECT_FALSE(whole.backward(s).defined());

  GPTModel first(c, Device::cpu(), {}, ModelChunkConfig{true, false, 0, 1});
  GPTModel last(c, Device::cpu(), {}, ModelChunkConfig{false, true, 1, -1});
  // The tied word embedding's second copy (on the last chunk) is a pipeline duplicate: counted once.
  EXPECT_EQ(first.num_parameters() + last.num_parameters(), whole.num_parameters());
  EXPECT_EQ(last.shared_embedding() >= 0, !llama);
  EXPECT_EQ(first.shared_embedding() >= 0, !llama);
  first.init(11);
  last.init(11);
  first.buffer().zero_grads();
  last.buffer().zero_grads();
  GPTModel::Saved sa, sb;
  const Tensor h = first.forward(tokens, ctx, sa);
  ForwardContext ctx_last = ctx;
  ctx_last.batch = B;
  ctx_last.seq = T;
  const Tensor got = last.forward_loss(h, targets, ctx_last, &dloss, sb);
  EXPECT_TRUE(same_bits(got, want));
  const Tensor dh = last.backward(sb);
  ASSERT_TRUE(dh.defined());
  EXPECT_FALSE(first.backward(dh, sa).defined());

  for (const ParamInfo& p : whole.buffer().infos()) {
    const auto& wb = whole.buffer();
    const Tensor w = wb.param(wb.find(p.name)), g = wb.grad(wb.find(p.name));
    const GPTModel* owners[] = {&first, &last};
    int found = 0;
    Tensor grad_sum;
    for (const GPTModel* m : owners) {
      const int id = m->buffer().find(p.name);
      if (id < 0) continue;
      ++found;
      EXPECT_TRUE(same_bits(m->buffer().param(id), w)) << p.name << ": initial weights differ";
      const Tensor gc = m->buffer().grad(id);
      if (!grad_sum.defined()) {
        grad_sum = Tensor::empty(gc.shape(), DType::F32);
        grad_sum.copy_from(gc);
      } else {
        add(grad_sum, gc, grad_sum);
      }
    }
    ASSERT_GE(found, 1) << p.name;
    if (found == 1) {
      EXPECT_TRUE(same_bits(grad_sum, g)) << p.name << ": gradient differs";
    } else {  // the tied word embedding: the embedding's and the output layer's shares, summed in another order
      const float* a = grad_sum.data<float>();
      const float* b = g.data<float>();
      for (int64_t i = 0; i < g.numel(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6f * (1.0f + std::fabs(b[i]))) << p.name;
    }
  }
}

}  // namespace

TEST(ModelChunk, GptChunksComputeTheWholeModelWithDropout) { chunks_compute_the_whole_model(false); }
TEST(ModelChunk, LlamaChunksComputeTheWholeModelWithDropout) { chunks_compute_the_whole_model(true); }

TEST(ModelChunk, APostProcessChunkHoldsItsLayersUnderGlobalNamesAndATiedEmbeddingCopy) {
  GPTModel last(tiny(false), Device::cpu(), {}, ModelChunkConfig{false, true, 2, -1});
  EXPECT_EQ(last.buffer().find("decoder.layers.1.input_layernorm.weight"), -1);
  EXPECT_GE(last.buffer().find("decoder.layers.2.input_layernorm.weight"), 0);
  EXPECT_GE(last.buffer().find("embedding.word_embeddings.weight"), 0);  // the tied copy
  EXPECT_EQ(last.buffer().find("embedding.position_embeddings.weight"), -1);
}
