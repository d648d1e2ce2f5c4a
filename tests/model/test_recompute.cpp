// Activation recomputation (--recompute-granularity full|selective, --recompute-method,
// --recompute-num-layers, --recompute-modules, --recompute-gelu): every option gives the same
// losses, gradients and MoE metrics as keeping every activation, bit for bit on CPU, with dropout
// on, for GPT, a Llama-like, an MoE and a multi-latent-attention model; and each one keeps less
// between forward and backward.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "core/rng.h"
#include "kernels/elementwise.h"
#include "model/gpt_model.h"
#include "model/moe_metrics.h"

using namespace mt;

namespace {

TransformerConfig gpt() {
  TransformerConfig c;
  c.num_layers = 4;
  c.hidden_size = 32;
  c.ffn_hidden_size = 64;
  c.num_attention_heads = 4;
  c.seq_length = 16;
  c.max_position_embeddings = 16;
  c.vocab_size = 61;
  c.padded_vocab_size = 64;
  c.hidden_dropout = 0.1f;
  c.attention_dropout = 0.1f;
  return c;
}

TransformerConfig llama() {
  TransformerConfig c = gpt();
  c.normalization = Normalization::RMSNorm;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.add_bias_linear = false;
  c.position_embedding_type = PositionEmbedding::Rope;
  c.num_query_groups = 2;
  c.untie_embeddings_and_output_weights = true;
  return c;
}

TransformerConfig moe() {
  TransformerConfig c = llama();
  c.num_moe_experts = 4;
  c.moe_router_topk = 2;
  c.moe_ffn_hidden_size = 32;
  c.moe_shared_expert_intermediate_size = 32;
  c.moe_layer_pattern = {1, 0, 1, 1};  // a dense layer among them
  c.moe_aux_loss_coeff = 0.01f;
  c.moe_z_loss_coeff = 0.001f;
  return c;
}

// DeepSeek-like multi-latent attention (q LoRA, the latents' RMSNorms, YaRN) on the Llama-like block.
TransformerConfig mla(int q_lora_rank = 12) {
  TransformerConfig c = llama();
  c.multi_latent_attention = true;
  c.num_query_groups = 0;
  c.qk_layernorm = true;
  c.q_lora_rank = q_lora_rank;
  c.kv_lora_rank = 10;
  c.qk_head_dim = 8;
  c.qk_pos_emb_head_dim = 4;
  c.v_head_dim = 6;
  c.rope_type = RopeType::Yarn;
  c.rotary_scaling_factor = 4.0f;
  c.original_max_position_embeddings = 8;
  c.mscale = 0.9f;
  c.mscale_all_dim = 0.8f;
  return c;
}

struct StepResult {
  std::vector<float> losses, grads, expert_grads;
  MoEMetrics metrics;
  size_t kept_bytes = 0;  // host bytes held between the first microbatch's forward and backward
};

Tensor tokens_tensor(int B, int T, int64_t vocab, uint64_t stream) {
  Tensor t = Tensor::empty({B, T}, DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = int32_t(philox_u32(3, stream, i) % uint64_t(vocab));
  return t;
}

// Two microbatches of a training step (dropout on), gradients accumulated.
StepResult train_step(const TransformerConfig& c) {
  GPTModel model(c, Device::cpu());
  model.init(7);
  model.buffer().zero_grads();
  if (model.expert_buffer()) model.expert_buffer()->zero_grads();
  StepResult r;
  const int B = 2, T = c.seq_length;
  for (int m = 0; m < 2; ++m) {
    Tensor tokens = tokens_tensor(B, T, c.vocab_size, 2 * m + 1), targets = tokens_tensor(B, T, c.vocab_size, 2 * m + 2);
    Tensor dloss = Tensor::empty({B * T}, DType::F32);
    fill(dloss, 1.0f / float(B * T));
    ForwardContext ctx{true, 1234, uint64_t(m)};
    ctx.moe_metrics = &r.metrics;
    ctx.moe_loss_scale = 0.5;
    GPTModel::Saved s;
    const size_t before = host_allocator().bytes_in_use();
    Tensor l = model.forward_loss(tokens, targets, ctx, &dloss, s);
    if (m == 0) r.kept_bytes = host_allocator().bytes_in_use() - before;
    r.losses.insert(r.losses.end(), l.data<float>(), l.data<float>() + l.numel());
    model.backward(s);
  }
  const Tensor g = model.buffer().main_grads();
  r.grads.assign(g.data<float>(), g.data<float>() + g.numel());
  if (model.expert_buffer()) {
    const Tensor e = model.expert_buffer()->main_grads();
    r.expert_grads.assign(e.data<float>(), e.data<float>() + e.numel());
  }
  return r;
}

void expect_identical(const StepResult& a, const StepResult& b, const std::string& what) {
  EXPECT_EQ(a.losses, b.losses) << what;
  EXPECT_EQ(a.grads, b.grads) << what;
  EXPECT_EQ(a.expert_grads, b.expert_grads) << what;
  ASSERT_EQ(a.metrics.layers.size(), b.metrics.layers.size()) << what;
  for (size_t l = 0; l < a.metrics.layers.size(); ++l) {  // counted once, not again by the rerun
    EXPECT_EQ(a.metrics.layers[l].load_balancing_loss, b.metrics.layers[l].load_balancing_loss) << what;
    EXPECT_EQ(a.metrics.layers[l].z_loss, b.metrics.layers[l].z_loss) << what;
    EXPECT_EQ(a.metrics.layers[l].microbatches, b.metrics.layers[l].microbatches) << what;
    EXPECT_EQ(a.metrics.layers[l].tokens_per_expert, b.metrics.layers[l].tokens_per_expert) << what;
  }
}

struct Option {
  std::string name;
  std::function<void(TransformerConfig&)> set;
};

Option full(RecomputeMethod method, int n) {
  return {std::string(method == RecomputeMethod::Uniform ? "full uniform " : "full block ") + std::to_string(n),
          [=](TransformerConfig& c) {
            c.recompute_granularity = RecomputeGranularity::Full;
            c.recompute_method = method;
            c.recompute_num_layers = n;
          }};
}

Option selective(const std::vector<std::string>& modules) {
  std::string name = "selective";
  for (const auto& m : modules) name += " " + m;
  return {name, [=](TransformerConfig& c) {
            c.recompute_granularity = RecomputeGranularity::Selective;
            c.recompute_modules = parse_recompute_modules(modules);
          }};
}

std::vector<Option> every_option(int layers) {
  std::vector<Option> o;
  for (int n : {1, 2, 3}) o.push_back(full(RecomputeMethod::Uniform, n));
  for (int n = 1; n <= layers; ++n) o.push_back(full(RecomputeMethod::Block, n));
  for (const char* m : {"core_attn", "layernorm", "mlp", "mlp_act", "moe", "moe_act", "shared_experts"})
    o.push_back(selective({m}));
  o.push_back(selective({"layernorm", "mlp"}));
  o.push_back(selective({"layernorm", "moe"}));
  o.push_back(selective({"core_attn", "layernorm", "mlp_act", "moe_act", "shared_experts"}));
  o.push_back(selective({"core_attn", "layernorm", "mlp", "mlp_act", "moe", "moe_act", "shared_experts"}));
  o.push_back({"--recompute-gelu --recompute-num-layers 2", [](TransformerConfig& c) {
                 c.recompute_gelu = true;
                 c.recompute_num_layers = 2;
               }});
  return o;
}

void every_option_is_bit_identical(const TransformerConfig& base) {
  const StepResult keep = train_step(base);
  for (const Option& o : every_option(base.num_layers)) {
    TransformerConfig c = base;
    o.set(c);
    expect_identical(keep, train_step(c), o.name);
  }
}

}  // namespace

TEST(Recompute, FullGroupsFollowMegatronsUniformAndBlockMethods) {
  TransformerConfig c = gpt();
  c.recompute_granularity = RecomputeGranularity::Full;
  c.recompute_method = RecomputeMethod::Uniform;
  c.recompute_num_layers = 3;
  int first = -1, last = -1;
  ASSERT_TRUE(c.full_recompute_group(1, 4, &first, &last));
  EXPECT_EQ(first, 0);
  EXPECT_EQ(last, 2);
  ASSERT_TRUE(c.full_recompute_group(3, 4, &first, &last));  // the last group is shorter
  EXPECT_EQ(first, 3);
  EXPECT_EQ(last, 3);
  c.recompute_method = RecomputeMethod::Block;  // the first N of each chunk, one by one
  ASSERT_TRUE(c.full_recompute_group(2, 4, &first, &last));
  EXPECT_EQ(first, 2);
  EXPECT_EQ(last, 2);
  EXPECT_FALSE(c.full_recompute_group(3, 4, &first, &last));
  c.recompute_granularity = RecomputeGranularity::Selective;
  EXPECT_FALSE(c.full_recompute_group(0, 4, &first, &last));
}

TEST(Recompute, ModuleNamesAreMegatronsAndUnbuiltOnesAreNamed) {
  RecomputeModules m = parse_recompute_modules({"core_attn", "moe_act"});
  EXPECT_TRUE(m.core_attn && m.moe_act && !m.layernorm && !m.mlp);
  EXPECT_THROW(parse_recompute_modules({"mla_up_proj"}), UserError);
  EXPECT_THROW(parse_recompute_modules({"attention"}), UserError);
}

TEST(Recompute, GptEveryOptionIsBitIdentical) { every_option_is_bit_identical(gpt()); }
TEST(Recompute, LlamaEveryOptionIsBitIdentical) { every_option_is_bit_identical(llama()); }
TEST(Recompute, MoeEveryOptionIsBitIdentical) { every_option_is_bit_identical(moe()); }

// Multi-latent attention: core_attn reruns its core attention from the packed qkv, layernorm
// drops the down projections' input (linear_q_proj's without q LoRA); full reruns the layers.
TEST(Recompute, MlaEveryOptionIsBitIdentical) { every_option_is_bit_identical(mla()); }
TEST(Recompute, MlaWithoutQLoraIsBitIdenticalToo) {
  const TransformerConfig base = mla(0);
  const StepResult keep = train_step(base);
  for (const Option& o : {full(RecomputeMethod::Uniform, 2), full(RecomputeMethod::Block, 1), selective({"core_attn"}),
                          selective({"layernorm"}), selective({"core_attn", "layernorm", "mlp"})}) {
    TransformerConfig c = base;
    o.set(c);
    expect_identical(keep, train_step(c), o.name);
  }
}

TEST(Recompute, QkNormAndChunkedLossAreBitIdenticalToo) {
  TransformerConfig base = llama();
  base.qk_layernorm = true;
  base.cross_entropy_chunks = 4;
  const StepResult keep = train_step(base);
  for (const Option& o : {full(RecomputeMethod::Uniform, 2), selective({"core_attn", "layernorm", "mlp"})}) {
    TransformerConfig c = base;
    o.set(c);
    expect_identical(keep, train_step(c), o.name);
  }
}

// What is held between forward and backward drops with every option, and most with full.
TEST(Recompute, EveryOptionKeepsLessBetweenForwardAndBackward) {
  for (const TransformerConfig& base : {gpt(), llama(), moe(), mla(), mla(0)}) {
    const size_t keep = train_step(base).kept_bytes;
    std::vector<Option> options = {full(RecomputeMethod::Uniform, 1), full(RecomputeMethod::Uniform, 4),
                                   full(RecomputeMethod::Block, 2), selective({"core_attn"}),
                                   selective({"layernorm"}), selective({"mlp_act"})};
    if (base.is_moe())
      for (const char* m : {"moe", "moe_act", "shared_experts"}) options.push_back(selective({m}));
    else
      options.push_back(selective({"mlp"}));
    size_t full_one = 0;
    for (const Option& o : options) {
      TransformerConfig c = base;
      o.set(c);
      const size_t kept = train_step(c).kept_bytes;
      EXPECT_LT(kept, keep) << o.name;
      if (o.name == "full uniform 1") full_one = kept;
    }
    TransformerConfig c = base;
    full(RecomputeMethod::Uniform, 1).set(c);
    EXPECT_LT(double(full_one), 0.5 * double(keep));
  }
}

TEST(Recompute, Bf16IsBitIdenticalToo) {
  for (TransformerConfig base : {gpt(), moe(), mla()}) {
    base.params_dtype = DType::BF16;
    const StepResult keep = train_step(base);
    for (const Option& o : {full(RecomputeMethod::Uniform, 2), full(RecomputeMethod::Block, 1),
                            selective({"core_attn", "layernorm", "mlp", "moe", "mlp_act"}),
                            selective({"layernorm", "moe_act", "shared_experts"})}) {
      TransformerConfig c = base;
      o.set(c);
      expect_identical(keep, train_step(c), o.name);
    }
  }
}
