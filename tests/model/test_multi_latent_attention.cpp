// Multi-latent attention (model/multi_latent_attention.h): the forward against the math written out
// in double below (with and without q LoRA, value heads narrower and wider than the query/key
// heads, plain RoPE and YaRN), backward against finite differences (the module and a whole
// TransformerLayer built from an MLA spec), and YaRN's frequencies, table factor and softmax scale
// against the numbers Hugging Face transformers 5.25 computes for the same configuration
// (_compute_yarn_parameters and DeepseekV3Attention.scaling).
#include <gtest/gtest.h>

#include <cmath>

#include "grad_check.h"
#include "model/multi_latent_attention.h"
#include "model/rotary.h"
#include "model/transformer_layer.h"

using namespace mt;
using namespace mt::testing;

namespace {

struct MlaCase {
  int q_lora, v_head;
  bool yarn;
};

TransformerConfig mla_config(const MlaCase& m) {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.ffn_hidden_size = 32;
  c.num_attention_heads = 2;
  c.seq_length = 5;
  c.max_position_embeddings = 5;
  c.hidden_dropout = c.attention_dropout = 0.0f;
  c.add_bias_linear = false;
  c.normalization = Normalization::RMSNorm;
  c.qk_layernorm = true;
  c.multi_latent_attention = true;
  c.q_lora_rank = m.q_lora;
  c.kv_lora_rank = 6;
  c.qk_head_dim = 4;
  c.qk_pos_emb_head_dim = 4;
  c.v_head_dim = m.v_head;
  c.position_embedding_type = PositionEmbedding::Rope;
  if (m.yarn) {
    c.rope_type = RopeType::Yarn;
    c.rotary_base = 100.0f;
    c.rotary_scaling_factor = 4.0f;
    c.original_max_position_embeddings = 8;
    c.mscale = 0.9f;
    c.mscale_all_dim = 0.7f;
  }
  return c;
}

void randomise(ParamAndGradBuffer& buf) {
  for (const auto& p : buf.infos()) {
    Tensor t = buf.param(buf.find(p.name));
    fill_normal(t, 0.4f, 5, rng_stream(p.name));
    if (p.name.find("layernorm") != std::string::npos) {
      float* d = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) d[i] += 1.0f;
    }
  }
}

using Vec = std::vector<double>;

// y = W x for W [out, in] (row-major fp32 in the buffer).
Vec matvec(const ParamAndGradBuffer& buf, const std::string& name, const Vec& x) {
  const Tensor w = buf.param(buf.find(name));
  const int64_t out = w.size(0), in = w.size(1);
  Vec y(size_t(out), 0.0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) y[size_t(o)] += double(w.data<float>()[o * in + i]) * x[size_t(i)];
  return y;
}

Vec rmsnorm(const ParamAndGradBuffer& buf, const std::string& name, const Vec& x, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  const double r = 1 / std::sqrt(ms / double(x.size()) + eps);
  const float* w = buf.param(buf.find(name)).data<float>();
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * double(w[i]);
  return y;
}

// rotate_half RoPE of x[off, off + R) at position t (frequencies f, tables times m).
void rope(double* x, int R, int t, const std::vector<float>& f, double m) {
  for (int i = 0; i < R / 2; ++i) {
    const double c = std::cos(double(float(t) * f[size_t(i)])) * m, s = std::sin(double(float(t) * f[size_t(i)])) * m;
    const double a = x[i], b = x[i + R / 2];
    x[i] = a * c - b * s;
    x[i + R / 2] = b * c + a * s;
  }
}

// The layer's output for x [B, T, C], written out per token and head in double.
Vec reference(const ParamAndGradBuffer& buf, const TransformerConfig& c, const Tensor& x) {
  const int B = int(x.size(0)), T = int(x.size(1)), C = c.hidden_size, H = c.num_attention_heads;
  const int Dn = c.qk_head_dim, R = c.qk_pos_emb_head_dim, Dv = c.v_head_dim, L = c.kv_lora_rank;
  const std::vector<float> f = rope_frequencies(c);
  const double m = c.rope_type == RopeType::Yarn ? yarn_get_mscale(c.rotary_scaling_factor, c.mscale) /
                                                       yarn_get_mscale(c.rotary_scaling_factor, c.mscale_all_dim)
                                                 : 1.0;
  const double ms = c.rope_type == RopeType::Yarn ? yarn_get_mscale(c.rotary_scaling_factor, c.mscale_all_dim) : 1.0;
  const double scale = ms * ms / std::sqrt(double(Dn + R));
  const double eps = c.layernorm_epsilon;
  Vec out(size_t(B * T * C), 0.0);
  for (int b = 0; b < B; ++b) {
    std::vector<Vec> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)), v(static_cast<size_t>(T));  // per token: [H, Dn + R], [H, Dn + R], [H, Dv]
    for (int t = 0; t < T; ++t) {
      Vec xt(static_cast<size_t>(C));
      for (int i = 0; i < C; ++i) xt[size_t(i)] = double(x.data<float>()[(b * T + t) * C + i]);
      const std::string p = "attn.";
      q[size_t(t)] = c.q_lora_rank > 0
                         ? matvec(buf, p + "linear_q_up_proj.weight",
                                  rmsnorm(buf, p + "q_layernorm.weight",
                                          matvec(buf, p + "linear_q_down_proj.weight", xt), eps))
                         : matvec(buf, p + "linear_q_proj.weight", xt);
      const Vec kvd = matvec(buf, p + "linear_kv_down_proj.weight", xt);
      Vec kpe(kvd.begin() + L, kvd.end());
      rope(kpe.data(), R, t, f, m);
      const Vec kv = matvec(buf, p + "linear_kv_up_proj.weight",
                            rmsnorm(buf, p + "kv_layernorm.weight", Vec(kvd.begin(), kvd.begin() + L), eps));
      k[size_t(t)].assign(size_t(H * (Dn + R)), 0.0);
      v[size_t(t)].assign(size_t(H * Dv), 0.0);
      for (int h = 0; h < H; ++h) {
        rope(&q[size_t(t)][size_t(h * (Dn + R) + Dn)], R, t, f, m);
        for (int i = 0; i < Dn; ++i) k[size_t(t)][size_t(h * (Dn + R) + i)] = kv[size_t(h * (Dn + Dv) + i)];
        for (int i = 0; i < R; ++i) k[size_t(t)][size_t(h * (Dn + R) + Dn + i)] = kpe[size_t(i)];
        for (int i = 0; i < Dv; ++i) v[size_t(t)][size_t(h * Dv + i)] = kv[size_t(h * (Dn + Dv) + Dn + i)];
      }
    }
    for (int t = 0; t < T; ++t) {
      Vec o(size_t(H * Dv), 0.0);
      for (int h = 0; h < H; ++h) {
        Vec s(size_t(t + 1));
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < Dn + R; ++i)
            d += q[size_t(t)][size_t(h * (Dn + R) + i)] * k[size_t(j)][size_t(h * (Dn + R) + i)];
          s[size_t(j)] = d * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        for (int j = 0; j <= t; ++j) sum += (s[size_t(j)] = std::exp(s[size_t(j)] - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < Dv; ++i) o[size_t(h * Dv + i)] += s[size_t(j)] / sum * v[size_t(j)][size_t(h * Dv + i)];
      }
      const Vec y = matvec(buf, "attn.linear_proj.weight", o);
      for (int i = 0; i < C; ++i) out[size_t((b * T + t) * C + i)] = y[size_t(i)];
    }
  }
  return out;
}

class MultiLatentAttention : public ::testing::TestWithParam<MlaCase> {};

TEST_P(MultiLatentAttention, ForwardMatchesTheMathAndBackwardMatchesFiniteDifferences) {
  const TransformerConfig c = mla_config(GetParam());
  ParamAndGradBuffer buf;
  SelfAttentionSpec spec;
  spec.qk_layernorm = true;
  spec.multi_latent = true;
  MLASelfAttention attn(buf, "attn", c, spec);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  EXPECT_EQ(buf.find("attn.linear_q_down_proj.weight") >= 0, c.q_lora_rank > 0);
  EXPECT_EQ(buf.find("attn.linear_q_proj.weight") >= 0, c.q_lora_rank == 0);
  const RotaryTables rope = rope_tables(c, c.seq_length, Device::cpu());
  ForwardContext ctx;
  MLASelfAttention::Saved s;
  const Tensor x = random_tensor({2, c.seq_length, c.hidden_size}, 3);
  const Tensor y = attn.forward(x, ctx, 1, &rope, s);
  const Vec want = reference(buf, c, x);
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_NEAR(y.data<float>()[i], want[size_t(i)], 2e-5 + 2e-5 * std::fabs(want[size_t(i)])) << i;
  s = {};
  check_gradients(
      buf, x, [&](const Tensor& in) { return attn.forward(in, ctx, 1, &rope, s); },
      [&](const Tensor& dy) { return attn.backward(dy, s); }, GradCheckOptions{1e-2f, 2e-2, 1e-3, 12});
}

std::string mla_case_name(const MlaCase& c) {
  std::string n = c.q_lora > 0 ? "QLora" : "QProj";
  n += "_V" + std::to_string(c.v_head);
  if (c.yarn) n += "_Yarn";
  return n;
}
std::string mla_name(const ::testing::TestParamInfo<MlaCase>& info) { return mla_case_name(info.param); }
// Readable parameters: ctest's discovered names then carry no padding bytes.
void PrintTo(const MlaCase& c, std::ostream* os) { *os << mla_case_name(c); }

INSTANTIATE_TEST_SUITE_P(Shapes, MultiLatentAttention,
                         ::testing::Values(MlaCase{8, 6, false}, MlaCase{0, 10, false}, MlaCase{8, 8, true},
                                           MlaCase{0, 6, true}),
                         mla_name);

// The block holds MLA through its spec: a whole layer's gradients, and its parameter names.
TEST(MultiLatentAttentionLayer, TransformerLayerWithMlaSpecMatchesFiniteDifferences) {
  TransformerConfig c = mla_config({8, 6, true});
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  ParamAndGradBuffer buf;
  TransformerLayer layer(buf, "layer", c, gpt_layer_spec(c), 0);
  buf.allocate(DType::F32, Device::cpu());
  randomise(buf);
  for (const char* name : {"linear_q_down_proj", "q_layernorm", "linear_q_up_proj", "linear_kv_down_proj",
                           "kv_layernorm", "linear_kv_up_proj", "linear_proj"})
    EXPECT_GE(buf.find(std::string("layer.self_attention.") + name + ".weight"), 0) << name;
  EXPECT_LT(buf.find("layer.self_attention.linear_qkv.weight"), 0);
  const RotaryTables rope = rope_tables(c, c.seq_length, Device::cpu());
  ForwardContext ctx;
  TransformerLayer::Saved s;
  check_gradients(
      buf, random_tensor({2, c.seq_length, c.hidden_size}, 4),
      [&](const Tensor& in) { return layer.forward(in, ctx, &rope, s); },
      [&](const Tensor& dy) { return layer.backward(dy, s); }, GradCheckOptions{1e-2f, 2e-2, 1e-3, 12});
}

// Hugging Face's YaRN for DeepseekV3Config(qk_rope_head_dim=16, qk_nope_head_dim=8, rope_theta=1e4,
// rope_scaling {factor 40, original_max_position_embeddings 64, beta_fast 32, beta_slow 1,
// mscale 1, mscale_all_dim 0.8}): inv_freq, attention_factor, and the attention's scaling.
TEST(Yarn, FrequenciesAndScalesMatchHuggingFace) {
  TransformerConfig c;
  c.multi_latent_attention = true;
  c.qk_head_dim = 8;
  c.qk_pos_emb_head_dim = 16;
  c.rotary_base = 10000.0f;
  c.rope_type = RopeType::Yarn;
  c.rotary_scaling_factor = 40.0f;
  c.original_max_position_embeddings = 64;
  c.mscale = 1.0f;
  c.mscale_all_dim = 0.8f;
  const std::vector<double> hf{1.0,
                               0.2134537249803543,
                               0.034999996423721313,
                               0.0007905694656074047,
                               0.0002500000118743628,
                               7.905694656074047e-05,
                               2.499999936844688e-05,
                               7.905694474175107e-06};
  const std::vector<float> f = rope_frequencies(c);
  ASSERT_EQ(f.size(), hf.size());
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], hf[i], 1e-6 * hf[i]) << i;
  EXPECT_NEAR(rope_table_scale(c), 1.0569662567531275, 1e-6);
  EXPECT_NEAR(mla_softmax_scale(c), 0.3423796404971102, 1e-7);
  // Without YaRN: the plain frequencies, tables unscaled, 1/sqrt(qk dims).
  c.rope_type = RopeType::Rope;
  EXPECT_EQ(rope_table_scale(c), 1.0f);
  EXPECT_FLOAT_EQ(rope_frequencies(c)[1], 1.0f / std::pow(10000.0f, 2.0f / 16.0f));
  EXPECT_FLOAT_EQ(mla_softmax_scale(c), float(1 / std::sqrt(24.0)));
}

}  // namespace
