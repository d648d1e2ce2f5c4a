// Generation with the key/value cache: a right-padded prefill of prompts of different lengths,
// then decode steps of one token, give the logits of a full forward over each whole sequence
// (eval mode, fp32, CPU) at every generated position, for the GPT-2, Llama (GQA, RoPE with
// theta 500000 and Llama 3.1 scaling, SwiGLU, untied) and Qwen 3 (q/k norm, head_dim != C/H)
// configs of GPTModel; so does a multi-token step that continues a cached sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/rng.h"
#include "model/gpt_model.h"

using namespace mt;

namespace {

TransformerConfig gpt2() {
  TransformerConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.ffn_hidden_size = 64;
  c.num_attention_heads = 4;
  c.seq_length = 16;
  c.max_position_embeddings = 16;
  c.vocab_size = 37;
  c.padded_vocab_size = 64;
  c.hidden_dropout = c.attention_dropout = 0.0f;
  c.init_method_std = 0.2f;
  return c;
}

TransformerConfig llama() {
  TransformerConfig c = gpt2();
  c.normalization = Normalization::RMSNorm;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.add_bias_linear = false;
  c.num_query_groups = 2;
  c.position_embedding_type = PositionEmbedding::Rope;
  c.rotary_base = 500000.0f;
  c.rope_scaling = true;
  c.untie_embeddings_and_output_weights = true;
  c.seq_length = 8;  // shorter than the cache: the cache's own RoPE tables serve positions past it
  return c;
}

TransformerConfig qwen3() {
  TransformerConfig c = llama();
  c.rope_scaling = false;
  c.qk_layernorm = true;
  c.kv_channels = 16;  // != 32 / 4
  c.untie_embeddings_and_output_weights = false;
  return c;
}

std::vector<int32_t> random_tokens(int n, int64_t vocab, uint64_t stream) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = int32_t(philox_u32(9, stream, uint64_t(i)) % uint64_t(vocab));
  return v;
}

// Logits [T, V] of a full eval-mode forward over one sequence, by a model with the same weights
// (init depends only on the seed and names) whose training sequence covers it.
std::vector<std::vector<float>> full_logits(const TransformerConfig& cfg, uint64_t seed,
                                            const std::vector<int32_t>& seq) {
  TransformerConfig c = cfg;
  c.seq_length = int(seq.size());
  GPTModel model(c, Device::cpu());
  model.init(seed);
  Tensor t = Tensor::empty({1, int64_t(seq.size())}, DType::I32);
  std::copy(seq.begin(), seq.end(), t.data<int32_t>());
  GPTModel::Saved s;
  ForwardContext ctx{false, 1, 0};
  Tensor l = model.forward_logits(t, ctx, s);
  const int64_t V = l.size(2);
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < seq.size(); ++i)
    out.emplace_back(l.data<float>() + int64_t(i) * V, l.data<float>() + int64_t(i + 1) * V);
  return out;
}

double max_diff(const Tensor& logits, int64_t row, const std::vector<float>& want) {
  double d = 0;
  for (size_t v = 0; v < want.size(); ++v)
    d = std::max(d, double(std::fabs(logits.data<float>()[row * logits.size(1) + int64_t(v)] - want[v])));
  return d;
}

// Tokens [B, T] right-padded with token 0, and each row's count.
Tensor padded(const std::vector<std::vector<int32_t>>& rows, std::vector<int32_t>& counts) {
  size_t T = 0;
  for (const auto& r : rows) T = std::max(T, r.size());
  Tensor t = Tensor::zeros({int64_t(rows.size()), int64_t(T)}, DType::I32);
  counts.clear();
  for (size_t b = 0; b < rows.size(); ++b) {
    std::copy(rows[b].begin(), rows[b].end(), t.data<int32_t>() + b * T);
    counts.push_back(int32_t(rows[b].size()));
  }
  return t;
}

constexpr double kTol = 1e-5;  // fp32; logits are O(1) at init std 0.2

class KVCacheGeneration : public ::testing::TestWithParam<const char*> {
 protected:
  TransformerConfig config() const {
    const std::string n = GetParam();
    return n == "gpt2" ? gpt2() : n == "llama" ? llama() : qwen3();
  }
};

TEST_P(KVCacheGeneration, PrefillAndDecodeMatchFullForward) {
  const TransformerConfig c = config();
  GPTModel model(c, Device::cpu());
  model.init(7);
  const std::vector<int> prompt_len{5, 2, 7};
  constexpr int kSteps = 6;
  const int B = int(prompt_len.size());
  std::vector<std::vector<int32_t>> seqs, prompts;
  for (int b = 0; b < B; ++b) {
    seqs.push_back(random_tokens(prompt_len[size_t(b)] + kSteps, c.vocab_size, uint64_t(b)));
    prompts.emplace_back(seqs.back().begin(), seqs.back().begin() + prompt_len[size_t(b)]);
  }
  std::vector<std::vector<std::vector<float>>> want;
  for (const auto& s : seqs) want.push_back(full_logits(c, 7, s));

  KVCache cache = model.allocate_kv_cache(B, 16);
  std::vector<int32_t> counts;
  Tensor logits = model.forward_inference(padded(prompts, counts), counts, cache);
  ASSERT_EQ(logits.size(0), B);
  ASSERT_EQ(logits.size(1), c.padded_vocab_size);
  for (int b = 0; b < B; ++b)
    EXPECT_LE(max_diff(logits, b, want[size_t(b)][size_t(prompt_len[size_t(b)] - 1)]), kTol) << "prefill, seq " << b;
  for (int k = 0; k < kSteps; ++k) {
    Tensor next = Tensor::empty({B, 1}, DType::I32);
    for (int b = 0; b < B; ++b) next.data<int32_t>()[b] = seqs[size_t(b)][size_t(prompt_len[size_t(b)] + k)];
    logits = model.forward_inference(next, std::vector<int32_t>(size_t(B), 1), cache);
    for (int b = 0; b < B; ++b)
      EXPECT_LE(max_diff(logits, b, want[size_t(b)][size_t(prompt_len[size_t(b)] + k)]), kTol)
          << "step " << k << ", seq " << b;
  }
  for (int b = 0; b < B; ++b) EXPECT_EQ(cache.lengths[size_t(b)], prompt_len[size_t(b)] + kSteps);
}

// A step of several tokens on top of a cached prefix (start > 0, T > 1) attends over the cache.
TEST_P(KVCacheGeneration, MultiTokenContinuationMatchesFullForward) {
  const TransformerConfig c = config();
  GPTModel model(c, Device::cpu());
  model.init(8);
  const std::vector<int32_t> seq0 = random_tokens(11, c.vocab_size, 5), seq1 = random_tokens(9, c.vocab_size, 6);
  const auto want0 = full_logits(c, 8, seq0), want1 = full_logits(c, 8, seq1);
  KVCache cache = model.allocate_kv_cache(2, 13);  // row 1: 6 cached + 7 (3 real, 4 padding)
  std::vector<int32_t> counts;
  model.forward_inference(padded({{seq0.begin(), seq0.begin() + 4}, {seq1.begin(), seq1.begin() + 6}}, counts),
                          counts, cache);
  // Then 7 more tokens of sequence 0 and 3 of sequence 1 in one step.
  Tensor logits = model.forward_inference(
      padded({{seq0.begin() + 4, seq0.end()}, {seq1.begin() + 6, seq1.end()}}, counts), counts, cache);
  EXPECT_LE(max_diff(logits, 0, want0[10]), kTol);
  EXPECT_LE(max_diff(logits, 1, want1[8]), kTol);
}

INSTANTIATE_TEST_SUITE_P(Families, KVCacheGeneration, ::testing::Values("gpt2", "llama", "qwen3"),
                         [](const auto& info) { return std::string(info.param); });

TEST(KVCache, RejectsATokenPastTheCache) {
  GPTModel model(gpt2(), Device::cpu());
  model.init(1);
  KVCache cache = model.allocate_kv_cache(1, 3);
  Tensor t = Tensor::zeros({1, 4}, DType::I32);
  EXPECT_DEATH(model.forward_inference(t, {4}, cache), "0 \\+ 4 tokens > cache of 3");
  EXPECT_DEATH(model.allocate_kv_cache(1, 17), "17 positions > max positions 16");
}

}  // namespace
