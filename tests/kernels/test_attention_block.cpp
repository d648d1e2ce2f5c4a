// The attention block kernel (attention_block.h) on the CPU:
//  - with q_pos = k_pos = arange(T) and one document it is causal attention: out and lse equal
//    attention_forward's within 1e-6, dqkv (through attention_pack_grads) attention_backward's
//    within 1e-5, dropout included (the same mask), for GQA and MHA and T off the tile size;
//  - ring attention: a sequence split over C load-balanced context-parallel ranks, each rank's
//    queries run against every rank's key/value block and merged by log-sum-exp, gives full
//    attention's out and lse at those positions, and the summed block gradients its dqkv;
//  - against a double-precision masked softmax and its analytic gradient, for arbitrary
//    positions, documents and dropout;
//  - a query that sees no key: lse -inf, out 0, the merge leaves the accumulator as it was, the
//    backward adds nothing and makes no NaN;
//  - the same bits for 1 and 2 threads; bf16 storage within bf16 tolerance of fp32.
#include "kernels/attention_block.h"

#include <cmath>
#include <limits>
#include <ostream>
#include <string>

#include "attention_block_testing.h"
#include "kernels/attention.h"
#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Forward {
  Tensor out, lse;
};

Forward block_forward(const Tensor& qkv, const Tensor& kv, const AttentionMask& mask, const BlockDims& d,
                      const AttentionConfig& cfg) {
  Forward f{Tensor::empty(d.out(), DType::F32), Tensor::empty(d.lse(), DType::F32)};
  attention_block_forward(qkv, kv, mask, f.out, f.lse, cfg);
  return f;
}

// kv [B, T, G, 2, D] of qkv [B, T, G, H/G + 2, D].
Tensor split_kv(const Tensor& qkv) {
  Tensor kv = Tensor::empty({qkv.size(0), qkv.size(1), qkv.size(2), 2, qkv.size(4)}, qkv.dtype());
  attention_split_kv(qkv, kv);
  return kv;
}

// expect_close, where equal infinities (the lse of a query that sees no key) also agree.
void expect_close_or_equal(const std::vector<float>& got, const std::vector<float>& want, double tol,
                           const char* what) {
  std::vector<float> g = got, w = want;
  for (size_t i = 0; i < g.size() && i < w.size(); ++i)
    if (g[i] == w[i]) g[i] = w[i] = 0.0f;
  expect_close(g, w, tol, tol, what);
}

// A fp32 tensor as dtype dt.
Tensor as(const Tensor& t, DType dt) { return from_vec(to_vec(t), t.shape(), dt); }

// ---- (a) positions arange(T), one document: causal attention ----

struct CausalCase {
  int64_t H, G, T;
  float dropout_p;
};

void PrintTo(const CausalCase& c, std::ostream* os) {
  *os << "H=" << c.H << " G=" << c.G << " T=" << c.T << " dropout=" << c.dropout_p;
}

class AttentionBlockCausal : public ::testing::TestWithParam<CausalCase> {};

TEST_P(AttentionBlockCausal, EqualsAttentionForwardAndBackward) {
  const auto [H, G, T, p] = GetParam();
  const BlockDims d{2, T, T, H, G, 16};
  const AttentionConfig cfg = block_config(d, p);
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 1, -2, 2), dout = random_tensor(d.out(), DType::F32, 2);
  Tensor out = Tensor::empty(d.out(), DType::F32), lse = Tensor::empty(d.lse(), DType::F32);
  Tensor dqkv = Tensor::empty(d.qkv(), DType::F32);
  attention_forward(qkv, out, lse, cfg);
  attention_backward(dout, qkv, out, lse, dqkv, cfg);

  const AttentionMask mask = block_mask(d.B, arange(T), arange(T), {}, T);
  Tensor kv = split_kv(qkv);
  const Forward f = block_forward(qkv, kv, mask, d, cfg);
  expect_close(to_vec(f.out), to_vec(out), 1e-6, 1e-6, "out");
  expect_close(to_vec(f.lse), to_vec(lse), 1e-6, 1e-6, "lse");

  Tensor dq = Tensor::zeros(d.out(), DType::F32), dkv = Tensor::zeros(d.kv(), DType::F32);
  attention_block_backward(dout, qkv, kv, f.out, f.lse, mask, dq, dkv, cfg);
  Tensor got = Tensor::empty(d.qkv(), DType::F32);
  attention_pack_grads(dq, dkv, got);
  expect_close(to_vec(got), to_vec(dqkv), 1e-5, 1e-5, "dqkv");
}

INSTANTIATE_TEST_SUITE_P(HeadsLengthsAndDropout, AttentionBlockCausal,
                         ::testing::Values(CausalCase{4, 2, 37, 0.0f}, CausalCase{4, 2, 100, 0.0f},
                                           CausalCase{3, 3, 100, 0.0f}, CausalCase{4, 2, 100, 0.2f},
                                           CausalCase{3, 3, 37, 0.2f}, CausalCase{4, 1, 130, 0.1f}),
                         [](const auto& info) {
                           const CausalCase& c = info.param;
                           return "H" + std::to_string(c.H) + "_G" + std::to_string(c.G) + "_T" + std::to_string(c.T) +
                                  (c.dropout_p > 0 ? "_dropout" : "");
                         });

// ---- (b) ring attention over load-balanced context-parallel ranks ----

struct RingCase {
  int64_t C;
  float dropout_p;
};

void PrintTo(const RingCase& c, std::ostream* os) { *os << "C=" << c.C << " dropout=" << c.dropout_p; }

class AttentionBlockRing : public ::testing::TestWithParam<RingCase> {};

// Rank r's queries against every rank's kv block, merged; gradients: dq summed over the blocks a
// rank's queries met, dk, dv summed at the rank that owns the keys. Tolerance 1e-5 (the merge
// and the split sums reorder fp32 additions).
TEST_P(AttentionBlockRing, MergedBlocksEqualFullAttention) {
  const auto [C, p] = GetParam();
  const int64_t T = 64, Tl = T / C;
  const BlockDims full{2, T, T, 4, 2, 16}, local{2, Tl, Tl, 4, 2, 16};
  const AttentionConfig cfg = block_config(full, p);
  Tensor qkv = random_tensor(full.qkv(), DType::F32, 3, -2, 2), dout = random_tensor(full.out(), DType::F32, 4);
  Tensor out = Tensor::empty(full.out(), DType::F32), lse = Tensor::empty(full.lse(), DType::F32);
  Tensor dqkv = Tensor::empty(full.qkv(), DType::F32);
  attention_forward(qkv, out, lse, cfg);
  attention_backward(dout, qkv, out, lse, dqkv, cfg);

  const size_t ranks = static_cast<size_t>(C);
  std::vector<std::vector<int64_t>> tok(ranks);
  std::vector<Tensor> qkv_r(ranks), kv_r(ranks), out_r(ranks), lse_r(ranks), dq_r(ranks), dkv_r(ranks);
  for (int64_t r = 0; r < C; ++r) {
    tok[size_t(r)] = load_balanced_tokens(T, C, r);
    qkv_r[size_t(r)] = take_tokens(qkv, tok[size_t(r)]);
    kv_r[size_t(r)] = split_kv(qkv_r[size_t(r)]);
    dq_r[size_t(r)] = Tensor::zeros(local.out(), DType::F32);
    dkv_r[size_t(r)] = Tensor::zeros(local.kv(), DType::F32);
  }
  for (int64_t r = 0; r < C; ++r) {
    const size_t q = size_t(r);
    out_r[q] = Tensor::zeros(local.out(), DType::F32);
    lse_r[q] = from_vec(std::vector<float>(size_t(shape_numel(local.lse())), -kInf), local.lse());
    for (int64_t s = 0; s < C; ++s) {  // the ring: the blocks arrive from rank r, r - 1, ...
      const size_t k = size_t((r - s + C) % C);
      const Forward f = block_forward(qkv_r[q], kv_r[k], block_mask(2, tok[q], tok[k], {}, T), local, cfg);
      attention_lse_merge(out_r[q], lse_r[q], f.out, f.lse);
    }
    expect_close(to_vec(out_r[q]), to_vec(take_tokens(out, tok[q])), 1e-5, 1e-5, "out");
    expect_close(to_vec(lse_r[q]), to_vec(take_lse(lse, tok[q])), 1e-5, 1e-5, "lse");
  }
  for (int64_t r = 0; r < C; ++r)
    for (int64_t s = 0; s < C; ++s) {
      const size_t q = size_t(r), k = size_t((r - s + C) % C);
      attention_block_backward(take_tokens(dout, tok[q]), qkv_r[q], kv_r[k], out_r[q], lse_r[q],
                               block_mask(2, tok[q], tok[k], {}, T), dq_r[q], dkv_r[k], cfg);
    }
  for (int64_t r = 0; r < C; ++r) {
    Tensor got = Tensor::empty(local.qkv(), DType::F32);
    attention_pack_grads(dq_r[size_t(r)], dkv_r[size_t(r)], got);
    expect_close(to_vec(got), to_vec(take_tokens(dqkv, tok[size_t(r)])), 1e-5, 1e-5, "dqkv");
  }
}

INSTANTIATE_TEST_SUITE_P(RanksAndDropout, AttentionBlockRing,
                         ::testing::Values(RingCase{2, 0.0f}, RingCase{4, 0.0f}, RingCase{2, 0.2f}, RingCase{4, 0.2f}),
                         [](const auto& info) {
                           return "C" + std::to_string(info.param.C) + (info.param.dropout_p > 0 ? "_dropout" : "");
                         });

// ---- (c) against a double-precision masked softmax ----

struct Reference {
  std::vector<double> out, lse, dq, dkv;
};

// out, lse and the analytic gradients of L = <out, dout> in double, with the kernel's layouts:
// s_ij = q_i.k_j / sqrt(D) (or times cfg.softmax_scale when set) over the visible keys, P = softmax_j(s), out_i = sum_j P_ij z_ij v_j;
// dv_j = sum_i P_ij z_ij dO_i, dP_ij = z_ij dO_i.v_j, dS_ij = P_ij (dP_ij - dO_i.out_i),
// dq_i = sum_j dS_ij k_j / sqrt(D), dk_j = sum_i dS_ij q_i / sqrt(D) (over the group's heads).
Reference reference(const std::vector<double>& qkv, const std::vector<double>& kv, const std::vector<double>& dout,
                    const AttentionMask& mask, const BlockDims& d, const AttentionConfig& cfg) {
  const int64_t hpg = d.per_group(), D = d.D;
  const double scale = cfg.softmax_scale > 0 ? double(cfg.softmax_scale) : 1 / std::sqrt(double(D));
  const bool docs = mask.q_doc.defined();
  auto q_at = [&](int64_t b, int64_t i, int64_t h, int64_t c) {
    return size_t((((b * d.Tq + i) * d.G + h / hpg) * (hpg + 2) + h % hpg) * D + c);
  };
  auto kv_at = [&](int64_t b, int64_t j, int64_t g, int64_t which, int64_t c) {
    return size_t((((b * d.Tk + j) * d.G + g) * 2 + which) * D + c);
  };
  auto row_at = [&](int64_t b, int64_t i, int64_t h, int64_t c) { return size_t(((b * d.Tq + i) * d.H + h) * D + c); };
  Reference r;
  r.out.assign(size_t(shape_numel(d.out())), 0);
  r.dq.assign(r.out.size(), 0);
  r.lse.assign(size_t(shape_numel(d.lse())), -INFINITY);
  r.dkv.assign(size_t(shape_numel(d.kv())), 0);
  std::vector<double> pr(size_t(d.Tk)), z(size_t(d.Tk));  // P and the dropout factor of each key
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t g = h / hpg;
      for (int64_t i = 0; i < d.Tq; ++i) {
        const int32_t qp = mask.q_pos.data<int32_t>()[b * d.Tq + i];
        auto sees = [&](int64_t j) {
          return mask.k_pos.data<int32_t>()[b * d.Tk + j] <= qp &&
                 (!docs || mask.k_doc.data<int32_t>()[b * d.Tk + j] == mask.q_doc.data<int32_t>()[b * d.Tq + i]);
        };
        double m = -INFINITY;
        for (int64_t j = 0; j < d.Tk; ++j) {
          pr[size_t(j)] = 0;
          if (!sees(j)) continue;
          double s = 0;
          for (int64_t c = 0; c < D; ++c) s += qkv[q_at(b, i, h, c)] * kv[kv_at(b, j, g, 0, c)];
          pr[size_t(j)] = s * scale;
          m = std::max(m, s * scale);
        }
        if (m == -INFINITY) continue;  // sees no key: out 0, lse -inf, no gradient
        double sum = 0;
        for (int64_t j = 0; j < d.Tk; ++j)
          if (sees(j)) sum += std::exp(pr[size_t(j)] - m);
        const double lse = m + std::log(sum);
        r.lse[size_t((b * d.H + h) * d.Tq + i)] = lse;
        const uint64_t row = uint64_t((cfg.batch_offset + b) * cfg.mask_heads() + cfg.head_offset + h);
        for (int64_t j = 0; j < d.Tk; ++j) {
          if (!sees(j)) {
            pr[size_t(j)] = z[size_t(j)] = 0;
            continue;
          }
          const uint64_t kp = uint64_t(mask.k_pos.data<int32_t>()[b * d.Tk + j]);
          const uint64_t idx = (row * uint64_t(mask.seq) + uint64_t(qp)) * uint64_t(mask.seq) + kp;
          z[size_t(j)] = cfg.dropout_p == 0                                          ? 1.0
                         : philox_uniform(cfg.seed, cfg.stream, idx) > cfg.dropout_p ? 1.0 / (1.0 - cfg.dropout_p)
                                                                                     : 0.0;
          pr[size_t(j)] = std::exp(pr[size_t(j)] - lse);
          for (int64_t c = 0; c < D; ++c)
            r.out[row_at(b, i, h, c)] += pr[size_t(j)] * z[size_t(j)] * kv[kv_at(b, j, g, 1, c)];
        }
        double delta = 0;
        for (int64_t c = 0; c < D; ++c) delta += dout[row_at(b, i, h, c)] * r.out[row_at(b, i, h, c)];
        for (int64_t j = 0; j < d.Tk; ++j) {
          if (pr[size_t(j)] == 0) continue;
          double dov = 0;
          for (int64_t c = 0; c < D; ++c) dov += dout[row_at(b, i, h, c)] * kv[kv_at(b, j, g, 1, c)];
          const double ds = pr[size_t(j)] * (z[size_t(j)] * dov - delta) * scale;
          for (int64_t c = 0; c < D; ++c) {
            r.dq[row_at(b, i, h, c)] += ds * kv[kv_at(b, j, g, 0, c)];
            r.dkv[kv_at(b, j, g, 0, c)] += ds * qkv[q_at(b, i, h, c)];
            r.dkv[kv_at(b, j, g, 1, c)] += pr[size_t(j)] * z[size_t(j)] * dout[row_at(b, i, h, c)];
          }
        }
      }
    }
  return r;
}

// Queries at 100 positions and keys at 90 positions of a 160-token sequence, each in random order
// (neither a multiple of the 64 tile), cut into about 5 documents; GQA (4 heads, 2 groups). The
// fp32 kernel is held to |got - want| <= 1e-5 (1 + |want|) of the double reference: its sums
// run over <= 90 keys and D = 16 in fp32 (errors of a few 1e-7 relative), far below any
// masking or dropout mistake (O(0.1)).
void check_against_reference(float p, float softmax_scale) {
  const int64_t S = 160;
  const BlockDims d{2, 100, 90, 4, 2, 16};
  AttentionConfig cfg = block_config(d, p);
  cfg.softmax_scale = softmax_scale;
  cfg.batch_offset = 1;  // as a data-parallel rank's samples [1, 3) and a tensor-parallel rank's heads [4, 8) of 8
  cfg.head_offset = 4;
  cfg.total_heads = 8;
  const auto q_tok = random_positions(d.Tq, S, 5), k_tok = random_positions(d.Tk, S, 6);
  const AttentionMask mask = block_mask(d.B, q_tok, k_tok, random_documents(d.B, S, 5, 7), S);
  const auto x = random_vec(size_t(shape_numel(d.qkv())), 8, -2, 2);
  const auto y = random_vec(size_t(shape_numel(d.kv())), 9, -2, 2);
  const auto g = random_vec(size_t(shape_numel(d.out())), 10);
  Tensor qkv = from_vec(x, d.qkv()), kv = from_vec(y, d.kv()), dout = from_vec(g, d.out());
  const Reference want = reference(to_double(x), to_double(y), to_double(g), mask, d, cfg);

  const Forward f = block_forward(qkv, kv, mask, d, cfg);
  expect_close(to_vec(f.out), want.out, 1e-5, 1e-5, "out");
  expect_close(to_vec(f.lse), want.lse, 1e-5, 1e-5, "lse");
  Tensor dq = Tensor::zeros(d.out(), DType::F32), dkv = Tensor::zeros(d.kv(), DType::F32);
  attention_block_backward(dout, qkv, kv, f.out, f.lse, mask, dq, dkv, cfg);
  expect_close(to_vec(dq), want.dq, 1e-5, 1e-5, "dq");
  expect_close(to_vec(dkv), want.dkv, 1e-5, 1e-5, "dkv");
}

class AttentionBlockReference : public ::testing::TestWithParam<float> {};

TEST_P(AttentionBlockReference, MatchesMaskedSoftmaxAndItsGradientInDouble) { check_against_reference(GetParam(), 0.0f); }

// Multi-latent attention's explicit softmax scale (context parallelism runs MLA through this kernel).
TEST(AttentionBlockReferenceScaled, AnExplicitSoftmaxScaleIsApplied) { check_against_reference(0.25f, 0.4f); }

INSTANTIATE_TEST_SUITE_P(WithAndWithoutDropout, AttentionBlockReference, ::testing::Values(0.0f, 0.25f),
                         [](const auto& info) { return info.param > 0 ? "dropout" : "no_dropout"; });

// ---- (d) queries that see no key ----

// Documents: positions 0..4, 5, 6..12. Keys at positions 4, 6, 7, ..., 12; queries at 0..7.
// Queries 0..3 (every key later) and 5 (alone in its document) see nothing; 4, 6, 7 see keys.
TEST(AttentionBlockEmptyRows, GiveMinusInfinityZeroOutputAndNoGradient) {
  const BlockDims d{1, 8, 8, 2, 1, 8};
  const AttentionConfig cfg = block_config(d, 0.1f);
  const std::vector<int64_t> q_tok = arange(8), k_tok{4, 6, 7, 8, 9, 10, 11, 12};
  const std::vector<std::vector<int32_t>> docs{{0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2}};
  const AttentionMask mask = block_mask(1, q_tok, k_tok, docs, 13);
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 11), kv = random_tensor(d.kv(), DType::F32, 12);
  const Forward f = block_forward(qkv, kv, mask, d, cfg);
  const auto out = to_vec(f.out), lse = to_vec(f.lse);
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t i = 0; i < d.Tq; ++i) {
      const bool empty = i < 4 || i == 5;
      const float l = lse[size_t(h * d.Tq + i)];
      if (empty) {
        EXPECT_EQ(l, -kInf) << "head " << h << " query " << i;
        for (int64_t c = 0; c < d.D; ++c) EXPECT_EQ(out[size_t((i * d.H + h) * d.D + c)], 0.0f);
      } else {
        EXPECT_TRUE(std::isfinite(l)) << "head " << h << " query " << i;
      }
    }

  // Merging a -inf row leaves the accumulator's row as it was; into a -inf row it takes the block's.
  Tensor acc_out = random_tensor(d.out(), DType::F32, 13), acc_lse = random_tensor(d.lse(), DType::F32, 14);
  const auto before_out = to_vec(acc_out), before_lse = to_vec(acc_lse);
  attention_lse_merge(acc_out, acc_lse, f.out, f.lse);
  const auto after_out = to_vec(acc_out), after_lse = to_vec(acc_lse);
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t i : {0, 1, 2, 3, 5}) {
      EXPECT_EQ(after_lse[size_t(h * d.Tq + i)], before_lse[size_t(h * d.Tq + i)]);
      for (int64_t c = 0; c < d.D; ++c) {
        const size_t k = size_t((i * d.H + h) * d.D + c);
        EXPECT_EQ(after_out[k], before_out[k]);
      }
    }
  Tensor empty_out = Tensor::zeros(d.out(), DType::F32);
  Tensor empty_lse = from_vec(std::vector<float>(size_t(shape_numel(d.lse())), -kInf), d.lse());
  attention_lse_merge(empty_out, empty_lse, f.out, f.lse);  // into -inf: the block's rows, -inf ones included
  EXPECT_EQ(to_vec(empty_out), out);
  EXPECT_EQ(to_vec(empty_lse), lse);

  // Backward adds nothing to the empty queries' dq, and no NaN anywhere.
  Tensor dout = random_tensor(d.out(), DType::F32, 15);
  Tensor dq = random_tensor(d.out(), DType::F32, 16), dkv = random_tensor(d.kv(), DType::F32, 17);
  const auto dq_before = to_vec(dq);
  attention_block_backward(dout, qkv, kv, f.out, f.lse, mask, dq, dkv, cfg);
  const auto dq_after = to_vec(dq), dkv_after = to_vec(dkv);
  for (float v : dq_after) EXPECT_FALSE(std::isnan(v));
  for (float v : dkv_after) EXPECT_FALSE(std::isnan(v));
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t i : {0, 1, 2, 3, 5})
      for (int64_t c = 0; c < d.D; ++c) {
        const size_t k = size_t((i * d.H + h) * d.D + c);
        EXPECT_EQ(dq_after[k], dq_before[k]);
      }
}

// A whole key block later than every query (a causal ring step above the diagonal): the block's
// forward is all -inf and zero, and its backward, given the queries' merged finite lse, adds
// exactly nothing.
TEST(AttentionBlockEmptyRows, ABlockNoQueryCanSeeContributesNothing) {
  const BlockDims d{2, 40, 40, 4, 2, 8};
  const AttentionConfig cfg = block_config(d, 0.2f);
  const AttentionMask own = block_mask(2, arange(40), arange(40), {}, 80), later = [&] {
    std::vector<int64_t> k(40);
    for (int64_t j = 0; j < 40; ++j) k[size_t(j)] = 40 + j;
    return block_mask(2, arange(40), k, {}, 80);
  }();
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 18), kv = random_tensor(d.kv(), DType::F32, 19);
  const Forward f = block_forward(qkv, kv, later, d, cfg);
  for (float v : to_vec(f.lse)) EXPECT_EQ(v, -kInf);
  for (float v : to_vec(f.out)) EXPECT_EQ(v, 0.0f);

  const Forward merged = block_forward(qkv, split_kv(qkv), own, d, cfg);
  Tensor dq = random_tensor(d.out(), DType::F32, 20), dkv = random_tensor(d.kv(), DType::F32, 21);
  const auto dq_before = to_vec(dq), dkv_before = to_vec(dkv);
  attention_block_backward(random_tensor(d.out(), DType::F32, 22), qkv, kv, merged.out, merged.lse, later, dq, dkv,
                           cfg);
  EXPECT_EQ(to_vec(dq), dq_before);
  EXPECT_EQ(to_vec(dkv), dkv_before);
}

// ---- (e) thread count ----

TEST(AttentionBlockDeterminism, IsBitIdenticalForOneAndTwoThreads) {
  const int64_t S = 200;
  const BlockDims d{2, 100, 100, 4, 2, 16};
  const AttentionConfig cfg = block_config(d, 0.1f);
  const AttentionMask mask =
      block_mask(d.B, random_positions(100, S, 23), random_positions(100, S, 24), random_documents(d.B, S, 4, 25), S);
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 26), kv = random_tensor(d.kv(), DType::F32, 27);
  Tensor dout = random_tensor(d.out(), DType::F32, 28);
  Forward f[2];
  Tensor dq[2], dkv[2];
  for (int t = 0; t < 2; ++t)
    with_threads(t + 1, [&] {
      f[t] = block_forward(qkv, kv, mask, d, cfg);
      dq[t] = Tensor::zeros(d.out(), DType::F32);
      dkv[t] = Tensor::zeros(d.kv(), DType::F32);
      attention_block_backward(dout, qkv, kv, f[t].out, f[t].lse, mask, dq[t], dkv[t], cfg);
    });
  EXPECT_TRUE(bitwise_equal(f[0].out, f[1].out));
  EXPECT_TRUE(bitwise_equal(f[0].lse, f[1].lse));
  EXPECT_TRUE(bitwise_equal(dq[0], dq[1]));
  EXPECT_TRUE(bitwise_equal(dkv[0], dkv[1]));
}

// ---- (f) bf16 storage ----

// The same (bf16-representable) inputs stored as bf16 and as fp32. Forward differs only by the
// fp32 math's order (1e-5); backward also reads the merged out and dout in bf16 (out rounded to
// bf16 feeds D_i = dO.O): 2e-2, as attention_backward's bf16 test.
TEST(AttentionBlockBf16, AgreesWithFp32) {
  const int64_t S = 128;
  const BlockDims d{1, 64, 64, 4, 2, 16};
  const AttentionConfig cfg = block_config(d, 0.1f);
  const AttentionMask mask = block_mask(1, load_balanced_tokens(S, 2, 0), load_balanced_tokens(S, 2, 1),
                                        random_documents(1, S, 3, 29), S);
  const auto x = rounded(random_vec(size_t(shape_numel(d.qkv())), 30), DType::BF16);
  const auto y = rounded(random_vec(size_t(shape_numel(d.kv())), 31), DType::BF16);
  const auto g = rounded(random_vec(size_t(shape_numel(d.out())), 32), DType::BF16);
  Forward f[2];
  Tensor dq[2], dkv[2];
  const DType dts[2] = {DType::F32, DType::BF16};
  for (int k = 0; k < 2; ++k) {
    Tensor qkv = from_vec(x, d.qkv(), dts[k]), kv = from_vec(y, d.kv(), dts[k]);
    f[k] = block_forward(qkv, kv, mask, d, cfg);
    dq[k] = Tensor::zeros(d.out(), DType::F32);
    dkv[k] = Tensor::zeros(d.kv(), DType::F32);
    attention_block_backward(from_vec(g, d.out(), dts[k]), qkv, kv, as(f[k].out, dts[k]), f[k].lse, mask, dq[k],
                             dkv[k], cfg);
  }
  expect_close(to_vec(f[1].out), to_vec(f[0].out), 1e-5, 1e-5, "bf16 out");
  expect_close_or_equal(to_vec(f[1].lse), to_vec(f[0].lse), 1e-5, "bf16 lse");
  expect_close(to_vec(dq[1]), to_vec(dq[0]), 2e-2, 2e-2, "bf16 dq");
  expect_close(to_vec(dkv[1]), to_vec(dkv[0]), 2e-2, 2e-2, "bf16 dkv");
}

// ---- the small ops and the checks ----

TEST(AttentionBlockParts, SplitAndPackAreInversesOfTheLayout) {
  const BlockDims d{2, 5, 5, 6, 2, 4};
  Tensor qkv = random_tensor(d.qkv(), DType::BF16, 33);
  Tensor kv = split_kv(qkv);
  // dq from qkv's query heads, dkv = kv: packing them back gives qkv.
  const auto x = to_vec(qkv);
  std::vector<float> q;
  for (int64_t bt = 0; bt < d.B * d.Tq; ++bt)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t c = 0; c < d.D; ++c)
        q.push_back(x[size_t(((bt * d.G + h / 3) * 5 + h % 3) * d.D + c)]);
  Tensor packed = Tensor::empty(d.qkv(), DType::BF16);
  attention_pack_grads(from_vec(q, d.out()), as(kv, DType::F32), packed);
  EXPECT_TRUE(bitwise_equal(packed, qkv));
}

TEST(AttentionBlockChecks, RejectMismatchedMasksAndLayouts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenMP threads exist
  const BlockDims d{1, 4, 4, 2, 1, 8};
  const AttentionConfig cfg = block_config(d, 0.0f);
  Tensor qkv = random_tensor(d.qkv(), DType::F32, 1), kv = random_tensor(d.kv(), DType::F32, 2);
  Tensor out = Tensor::empty(d.out(), DType::F32), lse = Tensor::empty(d.lse(), DType::F32);
  AttentionMask mask = block_mask(1, arange(4), arange(4), {}, 4);
  attention_block_forward(qkv, kv, mask, out, lse, cfg);
  AttentionMask one_doc = mask;
  one_doc.q_doc = mask.q_pos;
  EXPECT_DEATH(attention_block_forward(qkv, kv, one_doc, out, lse, cfg), "both defined or both undefined");
  EXPECT_DEATH(attention_block_forward(qkv, random_tensor(d.kv(), DType::BF16, 3), mask, out, lse, cfg),
               "must have qkv's dtype");
  EXPECT_DEATH(attention_block_forward(qkv, kv, mask, Tensor::empty(d.out(), DType::BF16), lse, cfg),
               "out must be fp32");
  AttentionMask float_pos = mask;
  float_pos.k_pos = random_tensor({1, 4}, DType::F32, 4);
  EXPECT_DEATH(attention_block_forward(qkv, kv, float_pos, out, lse, cfg), "mask.k_pos must be int32");
}

}  // namespace
}  // namespace mt
