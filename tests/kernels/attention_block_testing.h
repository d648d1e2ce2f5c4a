#pragma once
// Helpers for the attention block tests (test_attention_block.cpp, test_cuda_attention_block.cpp):
// layouts, int32 mask tensors, the load-balanced context-parallel split of a sequence, and
// documents given by their boundaries.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/attention_block.h"
#include "kernels/kernel_testing.h"

namespace mt::testing {

// B samples of Tq queries against Tk keys, H query heads in G groups of head size D.
struct BlockDims {
  int64_t B, Tq, Tk, H, G, D;
  int64_t per_group() const { return H / G; }
  Shape qkv() const { return {B, Tq, G, H / G + 2, D}; }
  Shape kv() const { return {B, Tk, G, 2, D}; }
  Shape out() const { return {B, Tq, H, D}; }
  Shape lse() const { return {B, H, Tq}; }
};

inline AttentionConfig block_config(const BlockDims& d, float dropout_p, uint64_t seed = 42) {
  AttentionConfig cfg{int(d.H), int(d.D), dropout_p, seed, rng_stream("test/attention_block")};
  cfg.n_query_groups = int(d.G);
  return cfg;
}

inline Tensor int_tensor(const std::vector<int32_t>& v, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::I32);
  EXPECT_EQ(size_t(t.numel()), v.size());
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

inline std::vector<int64_t> arange(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t(0));
  return v;
}

// The tokens context-parallel rank r of C holds under the load-balanced split of T tokens: 2C
// chunks of T / (2C), rank r holding chunks r and 2C - 1 - r (so every rank's causal work is equal).
inline std::vector<int64_t> load_balanced_tokens(int64_t T, int64_t C, int64_t r) {
  const int64_t chunk = T / (2 * C);
  std::vector<int64_t> v;
  for (int64_t c : {r, 2 * C - 1 - r})
    for (int64_t t = c * chunk; t < (c + 1) * chunk; ++t) v.push_back(t);
  return v;
}

// x [B, T, ...] -> [B, tokens.size(), ...]: the given tokens of every sample, in that order.
inline Tensor take_tokens(const Tensor& x, const std::vector<int64_t>& tokens) {
  Shape shape = x.shape();
  const int64_t B = shape[0], T = shape[1];
  const size_t row = x.nbytes() / size_t(B * T);
  shape[1] = int64_t(tokens.size());
  Tensor y = Tensor::empty(shape, x.dtype());
  for (int64_t b = 0; b < B; ++b)
    for (size_t k = 0; k < tokens.size(); ++k)
      std::memcpy(static_cast<char*>(y.raw()) + (size_t(b) * tokens.size() + k) * row,
                  static_cast<const char*>(x.raw()) + size_t(b * T + tokens[k]) * row, row);
  return y;
}

// lse [B, H, T] -> [B, H, tokens.size()].
inline Tensor take_lse(const Tensor& lse, const std::vector<int64_t>& tokens) {
  const int64_t BH = lse.size(0) * lse.size(1), T = lse.size(2), n = int64_t(tokens.size());
  Tensor y = Tensor::empty({lse.size(0), lse.size(1), n}, DType::F32);
  for (int64_t r = 0; r < BH; ++r)
    for (int64_t k = 0; k < n; ++k) y.data<float>()[r * n + k] = lse.data<float>()[r * T + tokens[size_t(k)]];
  return y;
}

// doc[b][t] of a sequence of S tokens cut into documents at random boundaries (about n_docs per
// sample; documents are numbered within the sample).
inline std::vector<std::vector<int32_t>> random_documents(int64_t B, int64_t S, int n_docs, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> cut(1, S - 1);
  std::vector<std::vector<int32_t>> docs(size_t(B), std::vector<int32_t>(size_t(S), 0));
  for (auto& d : docs) {
    for (int k = 0; k < n_docs - 1; ++k) {
      const int64_t at = cut(gen);
      for (int64_t t = at; t < S; ++t) ++d[size_t(t)];
    }
  }
  return docs;
}

// The mask of queries at positions q_tok against keys at k_tok (the same in every sample), with
// documents docs[b][position] (empty: one document), in a sequence of S tokens.
inline AttentionMask block_mask(int64_t B, const std::vector<int64_t>& q_tok, const std::vector<int64_t>& k_tok,
                                const std::vector<std::vector<int32_t>>& docs, int64_t S) {
  auto rows = [&](const std::vector<int64_t>& tok, bool doc) {
    std::vector<int32_t> v;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t : tok) v.push_back(doc ? docs[size_t(b)][size_t(t)] : int32_t(t));
    return int_tensor(v, {B, int64_t(tok.size())});
  };
  AttentionMask m;
  m.q_pos = rows(q_tok, false);
  m.k_pos = rows(k_tok, false);
  if (!docs.empty()) {
    m.q_doc = rows(q_tok, true);
    m.k_doc = rows(k_tok, true);
  }
  m.seq = S;
  return m;
}

// n distinct positions of [0, S), in random order.
inline std::vector<int64_t> random_positions(int64_t n, int64_t S, uint32_t seed) {
  std::vector<int64_t> v = arange(S);
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  v.resize(size_t(n));
  return v;
}

}  // namespace mt::testing
