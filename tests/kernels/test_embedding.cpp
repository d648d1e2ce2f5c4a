// embedding: rows gathered (+ position rows), tokens outside a vocab-parallel shard give zero,
// backward against finite differences of L = sum(out * G), and thread-count determinism.
#include "kernels/embedding.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

Tensor ids_tensor(const std::vector<int32_t>& ids, int64_t B, int64_t T) {
  Tensor t = Tensor::empty({B, T}, DType::I32);
  std::copy(ids.begin(), ids.end(), t.data<int32_t>());
  return t;
}

TEST(EmbeddingForward, AddsTokenAndPositionRows) {
  const int64_t B = 2, T = 3, V = 5, C = 4, Tmax = 6;
  const std::vector<int32_t> ids = {4, 0, 2, 2, 3, 1};
  const auto wte = random_vec(size_t(V * C), 1), wpe = random_vec(size_t(Tmax * C), 2);
  Tensor wpe_t = from_vec(wpe, {Tmax, C}), out = Tensor::empty({B, T, C}, DType::F32);
  embedding_forward(ids_tensor(ids, B, T), from_vec(wte, {V, C}), &wpe_t, 0, out);
  std::vector<double> want(size_t(B * T * C));
  for (int64_t n = 0; n < B * T; ++n)
    for (int64_t c = 0; c < C; ++c) want[n * C + c] = double(wte[ids[n] * C + c]) + wpe[(n % T) * C + c];
  expect_close(to_vec(out), want, 1e-6, 1e-6, "out");
}

TEST(EmbeddingForward, TokensOutsideTheShardContributeZero) {
  const int64_t B = 1, T = 4, V = 3, C = 2, vocab_start = 3;  // this shard holds tokens 3, 4, 5
  const std::vector<int32_t> ids = {0, 3, 5, 6};
  const auto wte = random_vec(size_t(V * C), 3);
  Tensor out = Tensor::empty({B, T, C}, DType::BF16);
  embedding_forward(ids_tensor(ids, B, T), from_vec(wte, {V, C}, DType::BF16), nullptr, vocab_start, out);
  const auto r = rounded(wte, DType::BF16);
  expect_close(to_vec(out), std::vector<float>{0, 0, r[0], r[1], r[4], r[5], 0, 0}, 0, 0, "out");
}

TEST(EmbeddingBackward, MatchesFiniteDifferencesAndAccumulates) {
  const int64_t B = 2, T = 5, V = 4, C = 3, Tmax = 5, vocab_start = 2;
  const std::vector<int32_t> ids = {2, 3, 3, 7, 5, 0, 2, 2, 4, 5};  // repeats, and 0 and 7 off-shard
  const auto wte = random_vec(size_t(V * C), 4), wpe = random_vec(size_t(Tmax * C), 5);
  const auto g = random_vec(size_t(B * T * C), 6), dwte0 = random_vec(size_t(V * C), 7),
             dwpe0 = random_vec(size_t(Tmax * C), 8);
  Tensor dwte = from_vec(dwte0, {V, C}), dwpe = from_vec(dwpe0, {Tmax, C});
  embedding_backward(from_vec(g, {B, T, C}), ids_tensor(ids, B, T), vocab_start, dwte, &dwpe);

  // L(wte, wpe) = sum(G * forward(wte, wpe)), with our fp32 forward as the function.
  std::vector<double> params = to_double(wte);
  params.insert(params.end(), wpe.begin(), wpe.end());
  auto loss = [&](const std::vector<double>& p) {
    std::vector<float> pf(p.begin(), p.end());
    Tensor wpe_t = from_vec({pf.begin() + V * C, pf.end()}, {Tmax, C}), out = Tensor::empty({B, T, C}, DType::F32);
    embedding_forward(ids_tensor(ids, B, T), from_vec({pf.begin(), pf.begin() + V * C}, {V, C}), &wpe_t, vocab_start,
                      out);
    double l = 0;
    const auto o = to_vec(out);
    for (size_t i = 0; i < o.size(); ++i) l += double(o[i]) * g[i];
    return l;
  };
  std::vector<double> want(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    want[i] = (i < size_t(V * C) ? dwte0[i] : dwpe0[i - V * C]) + central_difference(params, i, 1e-2, loss);
  auto got = to_vec(dwte);
  const auto got_pe = to_vec(dwpe);
  got.insert(got.end(), got_pe.begin(), got_pe.end());
  expect_close(got, want, 1e-3, 1e-4, "dwte, dwpe");
}

TEST(EmbeddingBackward, IsBitIdenticalForOneAndTwoThreads) {
  const int64_t B = 4, T = 64, V = 16, C = 256;
  std::vector<int32_t> ids(size_t(B * T));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7) % V);  // each row hit many times
  Tensor ids_t = ids_tensor(ids, B, T), dout = random_tensor({B, T, C}, DType::BF16, 9);
  Tensor dwte[2], dwpe[2];
  for (int t = 0; t < 2; ++t) {
    dwte[t] = Tensor::zeros({V, C}, DType::F32);
    dwpe[t] = Tensor::zeros({T, C}, DType::F32);
    with_threads(t + 1, [&] { embedding_backward(dout, ids_t, 0, dwte[t], &dwpe[t]); });
  }
  EXPECT_TRUE(bitwise_equal(dwte[0], dwte[1]));
  EXPECT_TRUE(bitwise_equal(dwpe[0], dwpe[1]));
}

}  // namespace
}  // namespace mt
