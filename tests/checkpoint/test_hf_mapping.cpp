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

namespace {

// Mixtral (every layer MoE) or Qwen 3 MoE (q/k norm; layer 1 of 3 dense).
TransformerConfig moe(HfFamily f) {
  TransformerConfig c = llama(f == HfFamily::Mixtral ? HfFamily::Llama : HfFamily::Qwen3);
  c.num_layers = 3;
  c.num_moe_experts = 4, c.moe_router_topk = 2, c.moe_ffn_hidden_size = 16;
  if (f == HfFamily::Qwen3Moe) c.moe_layer_pattern = {1, 0, 1};
  return c;
}

}  // namespace

TEST(HfMapping, ExpertsRouterAndDenseLayersOfMoeFamilies) {
  for (HfFamily f : {HfFamily::Mixtral, HfFamily::Qwen3Moe}) {
    const TransformerConfig c = moe(f);
    EXPECT_EQ(hf_family_for(c), f);
    GPTModel model(c, Device::cpu());
    ASSERT_NE(model.expert_buffer(), nullptr);
    size_t experts = 0;
    std::set<std::string> hf_names;
    for (const HfTensorMap& m : hf_tensor_maps(f, c)) {
      for (const auto& h : m.hf_names) EXPECT_TRUE(hf_names.insert(h).second) << h;
      const ParamAndGradBuffer& buf = m.expert ? *model.expert_buffer() : model.buffer();
      const int id = buf.find(m.name);
      ASSERT_GE(id, 0) << hf_model_type(f) << ": " << m.name;
      Shape want = buf.infos()[size_t(id)].global_shape;
      if (m.vocab_rows) want[0] = c.vocab_size;
      EXPECT_EQ(m.shape, want) << m.name;
      experts += m.expert;
      // Conversions are exact inverses here too.
      Tensor ours = iota(m.shape);
      Tensor back = hf_to_ours(m, ours_to_hf(m, ours));
      EXPECT_EQ(std::memcmp(back.raw(), ours.raw(), ours.nbytes()), 0) << m.name;
    }
    EXPECT_EQ(experts, model.expert_buffer()->infos().size());
    const std::string block = f == HfFamily::Mixtral ? "block_sparse_moe" : "mlp";
    EXPECT_TRUE(hf_names.count("model.layers.2." + block + ".gate.weight"));
    EXPECT_TRUE(hf_names.count(f == HfFamily::Mixtral ? "model.layers.2.block_sparse_moe.experts.3.w3.weight"
                                                      : "model.layers.2.mlp.experts.3.up_proj.weight"));
    // Qwen 3 MoE's dense layer 1: the dense MLP's tensors, no router.
    EXPECT_EQ(hf_names.count("model.layers.1.mlp.gate_proj.weight"), f == HfFamily::Qwen3Moe ? 1u : 0u);
    EXPECT_EQ(hf_names.count("model.layers.1." + block + ".gate.weight"), f == HfFamily::Mixtral ? 1u : 0u);
  }
}

TEST(HfMapping, ExpertsFusedSliceOfTransformers5) {
  for (const HfTensorMap& m : hf_tensor_maps(HfFamily::Mixtral, moe(HfFamily::Mixtral))) {
    if (m.name == "decoder.layers.0.mlp.experts.local_experts.3.linear_fc1.weight") {
      EXPECT_EQ(m.hf_names, (std::vector<std::string>{"model.layers.0.block_sparse_moe.experts.3.w1.weight",
                                                      "model.layers.0.block_sparse_moe.experts.3.w3.weight"}));
      EXPECT_EQ(m.alt_name, "model.layers.0.mlp.experts.gate_up_proj");
      EXPECT_EQ(m.alt_shape, (Shape{4, 32, 16}));
      EXPECT_EQ(m.alt_index, 3);
    }
    if (m.name == "decoder.layers.0.mlp.experts.local_experts.1.linear_fc2.weight")
      EXPECT_EQ(m.alt_shape, (Shape{4, 16, 16}));
    if (m.name == "decoder.layers.0.mlp.router.weight") {
      EXPECT_EQ(m.alt_name, "model.layers.0.mlp.gate.weight");
      EXPECT_EQ(m.alt_index, -1);
    }
  }
}

TEST(HfMapping, MoeArchitecturesNoFamilyHoldsAreUserErrors) {
  TransformerConfig c = moe(HfFamily::Mixtral);
  c.moe_layer_pattern = {1, 0, 1};  // Mixtral has no dense layers
  EXPECT_THROW(hf_family_for(c), UserError);
  c = moe(HfFamily::Mixtral);
  c.moe_router_pre_softmax = true;  // Mixtral renormalises the top-k
  EXPECT_THROW(hf_family_for(c), UserError);
  c = moe(HfFamily::Qwen3Moe);
  c.moe_router_pre_softmax = true;  // Qwen 3 MoE with norm_topk_prob false
  EXPECT_EQ(hf_family_for(c), HfFamily::Qwen3Moe);
  c.moe_shared_expert_intermediate_size = 32;
  EXPECT_THROW(hf_family_for(c), UserError);
  c = moe(HfFamily::Mixtral);
  c.moe_router_score_function = MoeScoreFunction::Sigmoid;
  EXPECT_THROW(hf_family_for(c), UserError);
  c = moe(HfFamily::Mixtral);
  c.moe_router_enable_expert_bias = true;  // routes by biases Hugging Face has no place for
  EXPECT_THROW(hf_family_for(c), UserError);
  EXPECT_THROW(hf_tensor_maps(HfFamily::Llama, moe(HfFamily::Mixtral)), UserError);
  EXPECT_THROW(hf_tensor_maps(HfFamily::Mixtral, llama(HfFamily::Llama)), UserError);
}
