// Every layer's backward against central finite differences (fp32, tolerances in grad_check.h).
#include <gtest/gtest.h>

#include "grad_check.h"
#include "model/attention.h"
#include "model/norm.h"
#include "model/tensor_parallel.h"
#include "model/mlp.h"
#include "model/transformer_layer.h"

using namespace mt;
using namespace mt::testing;

namespace {

TransformerConfig tiny_config() {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.ffn_hidden_size = 32;
  c.num_attention_heads = 2;
  c.seq_length = 6;
  c.max_position_embeddings = 6;
  c.vocab_size = 20;
  c.padded_vocab_size = 32;
  c.hidden_dropout = 0.0f;
  c.attention_dropout = 0.0f;
  c.init_method_std = 0.3f;  // large enough that every path carries gradient
  return c;
}

// Randomises all parameters of buf (LayerNorm weights around 1 stay well-conditioned).
void randomise(ParamAndGradBuffer& buf) {
  for (const auto& p : buf.infos()) {
    Tensor t = buf.param(buf.find(p.name));
    fill_normal(t, 0.3f, 5, rng_stream(p.name));
    if ((p.name.find("layernorm") != std::string::npos || p.name.find("norm.weight") != std::string::npos) &&
        p.name.find("weight") != std::string::npos) {
      float* d = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) d[i] += 1.0f;
    }
  }
}

// A whole block sums O(100) terms into L: fp32 rounding of L divided by 2h is ~1e-4, so the
// absolute floor is raised (the key bias, whose true gradient is 0, sits at that floor).
const GradCheckOptions kBlockTolerance{1e-2f, 2e-2, 1e-3, 12};

}  // namespace

TEST(LayerGradients, LinearMatchesFiniteDifferences) {
  ParamAndGradBuffer buf;
  ColumnParallelLinear lin(buf, "lin", 8, 5, {});
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  ColumnParallelLinear::Saved s;
  check_gradients(buf, random_tensor({3, 8}, 1), [&](const Tensor& x) { return lin.forward(x, s); },
                  [&](const Tensor& dy) { return lin.backward(dy, s); });
}

namespace {

void norm_matches_finite_differences(Normalization kind) {
  ParamAndGradBuffer buf;
  Norm ln(buf, "ln.layernorm", 8, kind, 1e-5f);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  Norm::Saved s;
  check_gradients(buf, random_tensor({4, 8}, 2), [&](const Tensor& x) { return ln.forward(x, s); },
                  [&](const Tensor& dy) { return ln.backward(dy, s); });
}

}  // namespace

TEST(LayerGradients, LayerNormMatchesFiniteDifferences) { norm_matches_finite_differences(Normalization::LayerNorm); }
TEST(LayerGradients, RMSNormMatchesFiniteDifferences) { norm_matches_finite_differences(Normalization::RMSNorm); }

TEST(LayerGradients, SelfAttentionMatchesFiniteDifferences) {
  TransformerConfig c = tiny_config();
  ParamAndGradBuffer buf;
  SelfAttention attn(buf, "attn", c, gpt_layer_spec(c).self_attention);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  SelfAttention::Saved s;
  ForwardContext ctx{false, 1, 0};
  check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 3),
                  [&](const Tensor& x) { return attn.forward(x, ctx, 0, nullptr, s); },
                  [&](const Tensor& dy) { return attn.backward(dy, s); });
}

TEST(LayerGradients, MLPMatchesFiniteDifferences) {
  TransformerConfig c = tiny_config();
  ParamAndGradBuffer buf;
  MLP mlp(buf, "mlp", c, MlpKind::Dense);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  MLP::Saved s;
  check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 4),
                  [&](const Tensor& x) { return mlp.forward(x, s); },
                  [&](const Tensor& dy) { return mlp.backward(dy, s); });
}

namespace {

// --recompute-gelu: the MLP of `kind` matches finite differences when it recomputes its
// activation, and gives the same gradients, bit for bit on CPU, as keeping the activation's output.
void recompute_gives_the_kept_gradients(const TransformerConfig& c, MlpKind kind) {
  Tensor x = random_tensor({2, c.seq_length, c.hidden_size}, 4), dy = random_tensor({2, c.seq_length, c.hidden_size}, 6);
  std::vector<Tensor> grads;
  for (bool recompute : {false, true}) {
    ParamAndGradBuffer buf;
    MLP mlp(buf, "mlp", c, kind, {}, recompute);
    buf.allocate(DType::F32, Device::cpu());
    randomise(buf);
    MLP::Saved s;
    mlp.forward(x, s);
    EXPECT_EQ(s.fc2_in.x.defined(), !recompute);
    buf.zero_grads();
    mlp.backward(dy, s);
    grads.push_back(buf.main_grads().to(Device::cpu()));
    if (recompute)
      check_gradients(buf, x, [&](const Tensor& in) { return mlp.forward(in, s); },
                      [&](const Tensor& d) { return mlp.backward(d, s); });
  }
  const float* a = grads[0].data<float>();
  const float* b = grads[1].data<float>();
  for (int64_t i = 0; i < grads[0].numel(); ++i) ASSERT_EQ(a[i], b[i]) << "gradient element " << i;
}

}  // namespace

TEST(LayerGradients, MLPWithRecomputedGeluMatchesFiniteDifferencesAndTheKeptGelu) {
  recompute_gives_the_kept_gradients(tiny_config(), MlpKind::Dense);
}

TEST(LayerGradients, TransformerLayerMatchesFiniteDifferences) {
  TransformerConfig c = tiny_config();
  ParamAndGradBuffer buf;
  TransformerLayer layer(buf, "layer", c, gpt_layer_spec(c), 0);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  TransformerLayer::Saved s;
  ForwardContext ctx{false, 1, 0};
  check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 5),
                  [&](const Tensor& x) { return layer.forward(x, ctx, nullptr, s); },
                  [&](const Tensor& dy) { return layer.backward(dy, s); }, kBlockTolerance);
}

TEST(LayerGradients, TransformerLayerWithDropoutMatchesFiniteDifferences) {
  // Dropout masks are a pure function of (seed, stream, index): the same in every forward, so
  // the layer is a fixed differentiable function and finite differences apply.
  TransformerConfig c = tiny_config();
  c.hidden_dropout = 0.2f;
  c.attention_dropout = 0.2f;
  ParamAndGradBuffer buf;
  TransformerLayer layer(buf, "layer", c, gpt_layer_spec(c), 0);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  TransformerLayer::Saved s;
  ForwardContext ctx{true, 9, 3};
  check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 6),
                  [&](const Tensor& x) { return layer.forward(x, ctx, nullptr, s); },
                  [&](const Tensor& dy) { return layer.backward(dy, s); }, kBlockTolerance);
}

namespace {

// Llama's slots: RMSNorm, grouped-query attention (4 query heads in 2 groups, head dim 8 with
// RoPE on 6 of its channels, Llama 3.1 scaling), q/k norm, SwiGLU, no biases but QKV's.
TransformerConfig tiny_llama_config() {
  TransformerConfig c = tiny_config();
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.kv_channels = 8;
  c.normalization = Normalization::RMSNorm;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.add_bias_linear = false;
  c.add_qkv_bias = true;
  c.qk_layernorm = true;
  c.position_embedding_type = PositionEmbedding::Rope;
  c.rotary_percent = 0.75f;
  c.rope_scaling = true;
  c.rope_scaling_factor = 8.0f;
  c.rotary_base = 100.0f;
  return c;
}

}  // namespace

TEST(LayerGradients, GroupedQueryAttentionWithRopeAndQkNormMatchesFiniteDifferences) {
  TransformerConfig c = tiny_llama_config();
  ParamAndGradBuffer buf;
  SelfAttention attn(buf, "attn", c, gpt_layer_spec(c).self_attention);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  const RotaryTables rope = rope_tables(c, c.seq_length, Device::cpu());
  SelfAttention::Saved s;
  ForwardContext ctx{false, 1, 0};
  check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 3),
                  [&](const Tensor& x) { return attn.forward(x, ctx, 0, &rope, s); },
                  [&](const Tensor& dy) { return attn.backward(dy, s); });
}

TEST(LayerGradients, SwiGLUMLPMatchesFiniteDifferencesAndRecomputesBitForBit) {
  TransformerConfig c = tiny_llama_config();
  {
    ParamAndGradBuffer buf;
    MLP mlp(buf, "mlp", c, MlpKind::Gated);
    buf.allocate(DType::F32, Device::cpu());
    randomise(buf);
    EXPECT_EQ(buf.info(buf.find("mlp.linear_fc1.weight")).global_shape, (Shape{2, c.ffn_hidden_size, c.hidden_size}));
    MLP::Saved s;
    check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 4),
                    [&](const Tensor& x) { return mlp.forward(x, s); },
                    [&](const Tensor& dy) { return mlp.backward(dy, s); });
  }
  recompute_gives_the_kept_gradients(c, MlpKind::Gated);
}

TEST(LayerGradients, LlamaLayerWithDropoutMatchesFiniteDifferences) {
  TransformerConfig c = tiny_llama_config();
  c.hidden_dropout = 0.2f;
  c.attention_dropout = 0.2f;
  ParamAndGradBuffer buf;
  TransformerLayer layer(buf, "layer", c, gpt_layer_spec(c), 0);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  const RotaryTables rope = rope_tables(c, c.seq_length, Device::cpu());
  TransformerLayer::Saved s;
  ForwardContext ctx{true, 9, 3};
  check_gradients(buf, random_tensor({2, c.seq_length, c.hidden_size}, 6),
                  [&](const Tensor& x) { return layer.forward(x, ctx, &rope, s); },
                  [&](const Tensor& dy) { return layer.backward(dy, s); }, kBlockTolerance);
}
