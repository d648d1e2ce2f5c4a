// The key/value cache ops on the CPU: append puts each new token's key and value heads in slot
// start[b] + t (and nothing else), and attention over the cache equals the causal training
// kernel's rows: from an empty cache (a prefill), and for the last tokens of a sequence whose
// prefix was cached before (start > 0, several tokens per step), with grouped queries.
#include "kernels/kv_cache.h"

#include "kernels/attention.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

Tensor int_tensor(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::I32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

TEST(KVCache, AppendWritesEachTokenAtItsSlot) {
  const int64_t B = 2, T = 3, G = 2, Q = 2, D = 4, S = 8;
  Tensor qkv = random_tensor({B, T, G, Q + 2, D}, DType::F32, 1);
  Tensor kc = Tensor::zeros({B, S, G, D}, DType::F32), vc = Tensor::zeros({B, S, G, D}, DType::F32);
  const std::vector<int32_t> start{0, 4};
  kv_cache_append(qkv, int_tensor(start), kc, vc);
  const float* x = qkv.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t t = s - start[size_t(b)];
          const bool written = t >= 0 && t < T;
          const int64_t head = ((b * T + t) * G + g) * (Q + 2);
          const float k = written ? x[(head + Q) * D + d] : 0.0f, v = written ? x[(head + Q + 1) * D + d] : 0.0f;
          const int64_t at = ((b * S + s) * G + g) * D + d;
          ASSERT_EQ(kc.data<float>()[at], k) << b << " " << s << " " << g << " " << d;
          ASSERT_EQ(vc.data<float>()[at], v) << b << " " << s << " " << g << " " << d;
        }
}

// The whole sequence through attention_forward; the same tokens split into a cached prefix of
// P tokens and a step of the rest through kv_cache_attention.
void check_against_causal_kernel(int64_t H, int64_t G, int64_t D, int64_t Ttot, int64_t P) {
  const int64_t B = 2, S = Ttot + 3;
  AttentionConfig cfg{};
  cfg.n_heads = int(H);
  cfg.head_dim = int(D);
  cfg.n_query_groups = int(G);
  Tensor qkv = random_tensor({B, Ttot, G, H / G + 2, D}, DType::F32, uint32_t(H * 100 + G * 10 + P), -2.0f, 2.0f);
  Tensor want = Tensor::empty({B, Ttot, H, D}, DType::F32), lse = Tensor::empty({B, H, Ttot}, DType::F32);
  attention_forward(qkv, want, lse, cfg);

  Tensor kc = Tensor::zeros({B, S, G, D}, DType::F32), vc = Tensor::zeros({B, S, G, D}, DType::F32);
  const int64_t per_token = G * (H / G + 2) * D, R = Ttot - P;
  auto tokens = [&](int64_t from, int64_t n) {  // [B, n, ...] copy of tokens [from, from + n)
    Tensor t = Tensor::empty({B, n, G, H / G + 2, D}, DType::F32);
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(qkv.data<float>() + (b * Ttot + from) * per_token, n * per_token, t.data<float>() + b * n * per_token);
    return t;
  };
  Tensor out = Tensor::empty({B, R, H, D}, DType::F32);
  if (P > 0) {
    Tensor prefix = tokens(0, P);
    kv_cache_append(prefix, int_tensor({0, 0}), kc, vc);
  }
  Tensor step = tokens(P, R);
  const Tensor start = int_tensor({int32_t(P), int32_t(P)});
  kv_cache_append(step, start, kc, vc);
  kv_cache_attention(step, kc, vc, start, out, cfg);
  std::vector<float> want_rows;
  const auto w = to_vec(want);
  for (int64_t b = 0; b < B; ++b)
    want_rows.insert(want_rows.end(), w.begin() + (b * Ttot + P) * H * D, w.begin() + (b * Ttot + Ttot) * H * D);
  expect_close(to_vec(out), want_rows, 1e-5, 1e-6, "out");
}

TEST(KVCache, PrefillMatchesCausalAttention) {
  check_against_causal_kernel(4, 4, 16, 9, 0);   // multi-head
  check_against_causal_kernel(8, 2, 32, 70, 0);  // grouped queries, past one 64-key block
}

TEST(KVCache, DecodeAndContinuationMatchCausalAttention) {
  check_against_causal_kernel(4, 2, 16, 12, 11);  // one token per sequence (decode)
  check_against_causal_kernel(6, 3, 8, 20, 13);   // 7 tokens on a 13-token prefix
  check_against_causal_kernel(8, 1, 32, 90, 89);  // one group (multi-query)
}

// Rows shorter than the step (right padding) do not disturb the others: each sequence sees only
// its own prefix.
TEST(KVCache, SequencesOfDifferentLengthsAreIndependent) {
  const int64_t H = 4, G = 2, D = 8, S = 16;
  AttentionConfig cfg{};
  cfg.n_heads = int(H);
  cfg.head_dim = int(D);
  cfg.n_query_groups = int(G);
  Tensor kc = random_tensor({2, S, G, D}, DType::F32, 3), vc = random_tensor({2, S, G, D}, DType::F32, 4);
  Tensor q = random_tensor({2, 1, G, H / G + 2, D}, DType::F32, 5);
  Tensor out = Tensor::empty({2, 1, H, D}, DType::F32);
  kv_cache_attention(q, kc, vc, int_tensor({3, 9}), out, cfg);
  // Sequence 0 alone, with its cache rows past slot 3 overwritten: the same output.
  Tensor kc0 = Tensor::empty({1, S, G, D}, DType::F32), vc0 = Tensor::empty({1, S, G, D}, DType::F32);
  kc0.copy_from(kc.narrow0(0, 1));
  vc0.copy_from(vc.narrow0(0, 1));
  for (int64_t i = 4 * G * D; i < S * G * D; ++i) kc0.data<float>()[i] = vc0.data<float>()[i] = 100.0f;
  Tensor out0 = Tensor::empty({1, 1, H, D}, DType::F32);
  kv_cache_attention(q.narrow0(0, 1), kc0, vc0, int_tensor({3}), out0, cfg);
  EXPECT_TRUE(bitwise_equal(out0, out.narrow0(0, 1)));
}

}  // namespace
}  // namespace mt
