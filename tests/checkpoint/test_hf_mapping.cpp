// The Hugging Face mapping tables: every parameter of our model is mapped once with its shape, the
// conversions are exact inverses, and q/k/v land in Megatron's per-group order.
#include <gtest/gtest.h>

#include <set>

#include "checkpoint/hf_mapping.h"
#include "core/error.h"
#include "model/gpt_model.h"

using namespace mt;

namespace {

TransformerConfig gpt2() {
  TransformerConfig c;
  c.num_layers = 2, c.hidden_size = 16, c.ffn_hidden_size = 64, c.num_attention_heads = 4;
  c.vocab_size = 50, c.padded_vocab_size = 64, c.max_position_embeddings = 8, c.seq_length = 8;
  return c;
}

TransformerConfig llama(HfFamily f) {
  TransformerConfig c = gpt2();
  c.normalization = Normalization::RMSNorm;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.position_embedding_type = PositionEmbedding::Rope;
  c.add_bias_linear = false;
  c.num_attention_heads = 4, c.num_query_groups = 2, c.kv_channels = 8;  // head dim != hidden / heads
  c.untie_embeddings_and_output_weights = f != HfFamily::Qwen3;
  c.add_qkv_bias = f == HfFamily::Qwen2;
  c.qk_layernorm = f == HfFamily::Qwen3;
  return c;
}

// Distinct values per byte pair, so any misplaced element shows.
Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(s, DType::BF16);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] = uint16_t(i * 7 + 1);
  return t;
}

}  // namespace

TEST(HfMapping, EveryModelParameterIsMappedOnceWithItsShape) {
  for (HfFamily f : {HfFamily::Gpt2, HfFamily::Llama, HfFamily::Qwen2, HfFamily::Qwen3}) {
    const TransformerConfig c = f == HfFamily::Gpt2 ? gpt2() : llama(f);
    EXPECT_EQ(hf_family_for(c), f);
    GPTModel model(c, Device::cpu());
    const auto maps = hf_tensor_maps(f, c);
    std::set<std::string> names, hf_names;
    for (const HfTensorMap& m : maps) {
      EXPECT_TRUE(names.insert(m.name).second) << m.name;
      for (const auto& h : m.hf_names) EXPECT_TRUE(hf_names.insert(h).second) << h;
      const int id = model.buffer().find(m.name);
      ASSERT_GE(id, 0) << hf_model_type(f) << ": " << m.name;
      Shape want = model.buffer().infos()[size_t(id)].global_shape;
      if (m.vocab_rows) want[0] = c.vocab_size;  // checkpoints store the real vocabulary
      EXPECT_EQ(m.shape, want) << m.name;
    }
    EXPECT_EQ(maps.size(), model.buffer().infos().size()) << hf_model_type(f);
  }
}

TEST(HfMapping, ConversionsAreExactInverses) {
  for (HfFamily f : {HfFamily::Gpt2, HfFamily::Llama, HfFamily::Qwen2, HfFamily::Qwen3}) {
    for (const HfTensorMap& m : hf_tensor_maps(f, f == HfFamily::Gpt2 ? gpt2() : llama(f))) {
      Tensor ours = iota(m.shape);
      std::vector<Tensor> hf = ours_to_hf(m, ours);
      ASSERT_EQ(hf.size(), m.hf_shapes.size());
      for (size_t i = 0; i < hf.size(); ++i) EXPECT_EQ(hf[i].shape(), m.hf_shapes[i]) << m.hf_names[i];
      Tensor back = hf_to_ours(m, hf);
      EXPECT_EQ(std::memcmp(back.raw(), ours.raw(), ours.nbytes()), 0) << m.name;
    }
  }
}

TEST(HfMapping, QkvIsFusedPerQueryGroup) {
  // 4 heads in 2 groups of head dim 1, hidden 1: q rows q0..q3, k rows k0 k1, v rows v0 v1.
  HfTensorMap m;
  m.name = "qkv";
  m.layout = HfLayout::Qkv;
  m.groups = 2, m.heads = 4, m.head_dim = 1;
  m.shape = {8, 1};
  m.hf_names = {"q", "k", "v"};
  m.hf_shapes = {{4, 1}, {2, 1}, {2, 1}};
  auto t = [](std::vector<float> v) {
    Tensor x = Tensor::empty({int64_t(v.size()), 1}, DType::F32);
    for (size_t i = 0; i < v.size(); ++i) x.data<float>()[i] = v[i];
    return x;
  };
  Tensor ours = hf_to_ours(m, {t({0, 1, 2, 3}), t({10, 11}), t({20, 21})});
  const std::vector<float> want = {0, 1, 10, 20, 2, 3, 11, 21};  // [q0 q1 k0 v0 | q2 q3 k1 v1]
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(ours.data<float>()[i], want[i]) << i;
}

TEST(HfMapping, Gpt2Conv1DWeightsAreTransposed) {
  TransformerConfig c = gpt2();
  for (const HfTensorMap& m : hf_tensor_maps(HfFamily::Gpt2, c)) {
    if (m.name != "decoder.layers.0.mlp.linear_fc1.weight") continue;
    EXPECT_EQ(m.hf_shapes[0], (Shape{16, 64}));
    Tensor ours = iota(m.shape);  // [64, 16]
    Tensor hf = ours_to_hf(m, ours)[0];
    EXPECT_EQ(hf.data<uint16_t>()[3 * 64 + 5], ours.data<uint16_t>()[5 * 16 + 3]);
  }
}

TEST(HfMapping, ArchitecturesNoFamilyHoldsAreUserErrors) {
  TransformerConfig c = llama(HfFamily::Llama);
  c.normalization = Normalization::LayerNorm;  // LayerNorm + SwiGLU + RoPE
  EXPECT_THROW(hf_family_for(c), UserError);
  c = llama(HfFamily::Llama);
  c.add_qkv_bias = true;
  c.qk_layernorm = true;
  EXPECT_THROW(hf_family_for(c), UserError);
  EXPECT_THROW(hf_tensor_maps(HfFamily::Gpt2, llama(HfFamily::Llama)), UserError);
}
