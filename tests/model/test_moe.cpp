// Mixture of Experts on the CPU: the router's choices and probabilities against their plain
// definitions, its backward and its auxiliary losses' gradients against finite differences, the
// routing plan's capacity rules, the load-balancing loss's minimum (Megatron-LM #1545), and the
// whole MoE layer's gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "grad_check.h"
#include "model/moe_layer.h"
#include "model/moe_metrics.h"
#include "model/moe_router.h"
#include "model/moe_routing_plan.h"

using namespace mt;
using mt::testing::random_tensor;

namespace {

TransformerConfig moe_config(int E, int k) {
  TransformerConfig c;
  c.hidden_size = 16;
  c.num_attention_heads = 2;
  c.ffn_hidden_size = 32;
  c.num_moe_experts = E;
  c.moe_router_topk = k;
  c.moe_ffn_hidden_size = 16;
  c.gated_linear_unit = true;
  c.activation = Activation::Silu;
  c.add_bias_linear = false;
  c.hidden_dropout = c.attention_dropout = 0;
  return c;
}

std::vector<float> random_floats(int n, uint64_t stream, float std = 1.0f) {
  Tensor t = random_tensor({n}, stream, std);
  return std::vector<float>(t.data<float>(), t.data<float>() + n);
}

// The experts a plain sort picks: descending score, ties to the lower index.
std::vector<int> top_k(const std::vector<double>& score, int k) {
  std::vector<int> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return score[size_t(a)] > score[size_t(b)]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace

TEST(MoeRouter, ChoicesAndProbabilitiesFollowTheirDefinitions) {
  const int E = 6, k = 3;
  for (int mode = 0; mode < 4; ++mode) {
    TransformerConfig c = moe_config(E, k);
    c.moe_router_pre_softmax = mode == 1;
    c.moe_router_score_function = mode == 2 ? MoeScoreFunction::Sigmoid : MoeScoreFunction::Softmax;
    if (mode == 3) c.moe_router_topk_scaling_factor = 2.5f;
    const std::vector<float> l = random_floats(E, 10 + uint64_t(mode));
    std::vector<double> ld(l.begin(), l.end()), score(static_cast<size_t>(E));
    double z = 0;
    for (double v : ld) z += std::exp(v);
    for (int e = 0; e < E; ++e)
      score[size_t(e)] = mode == 1 ? std::exp(ld[size_t(e)]) / z : mode == 2 ? 1 / (1 + std::exp(-ld[size_t(e)])) : ld[size_t(e)];
    const std::vector<int> want = top_k(score, k);
    std::vector<double> p(static_cast<size_t>(k));
    double s = 0;
    for (int j = 0; j < k; ++j) {
      const double v = mode == 1 ? score[size_t(want[size_t(j)])] : mode == 2 ? score[size_t(want[size_t(j)])]
                                                                              : std::exp(ld[size_t(want[size_t(j)])]);
      p[size_t(j)] = v;
      s += v;
    }
    if (mode != 1)
      for (double& v : p) v /= s;
    int32_t idx[3];
    float probs[3];
    route_token(l.data(), nullptr, c, idx, probs);
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(idx[j], want[size_t(j)]) << "mode " << mode;
      EXPECT_NEAR(probs[j], p[size_t(j)] * (mode == 3 ? 2.5 : 1.0), 1e-6) << "mode " << mode;
    }
  }
}

TEST(MoeRouter, ExpertBiasChangesTheChoiceNotTheProbabilities) {
  TransformerConfig c = moe_config(4, 1);
  c.moe_router_score_function = MoeScoreFunction::Sigmoid;
  const float logits[4] = {2.0f, 1.0f, 0.0f, -1.0f};
  const float bias[4] = {0.0f, 0.0f, 0.0f, 1.0f};  // sigmoid(-1) + 1 > sigmoid(2)
  int32_t idx;
  float p;
  route_token(logits, bias, c, &idx, &p);
  EXPECT_EQ(idx, 3);
  EXPECT_NEAR(p, 1.0 / (1.0 + std::exp(1.0)), 1e-7);  // the unbiased score
}

TEST(MoeRouter, BackwardMatchesFiniteDifferences) {
  const int E = 6, k = 3;
  for (int mode = 0; mode < 4; ++mode) {
    TransformerConfig c = moe_config(E, k);
    c.moe_router_pre_softmax = mode == 1;
    c.moe_router_score_function = mode >= 2 ? MoeScoreFunction::Sigmoid : MoeScoreFunction::Softmax;
    if (mode == 3) c.moe_router_topk_scaling_factor = 1.7f;
    std::vector<float> l = random_floats(E, 20 + uint64_t(mode), 2.0f);
    const std::vector<float> w = random_floats(k, 30 + uint64_t(mode));
    int32_t idx[3];
    float probs[3];
    route_token(l.data(), nullptr, c, idx, probs);
    std::vector<double> grad(static_cast<size_t>(E));
    route_token_backward(l.data(), idx, w.data(), c, grad.data());
    auto objective = [&] {
      int32_t i2[3];
      float p2[3];
      route_token(l.data(), nullptr, c, i2, p2);
      for (int j = 0; j < k; ++j) EXPECT_EQ(i2[j], idx[j]);  // the step keeps the choice
      double s = 0;
      for (int j = 0; j < k; ++j) s += double(w[size_t(j)]) * p2[j];
      return s;
    };
    const float h = 1e-3f;
    for (int e = 0; e < E; ++e) {
      const float keep = l[size_t(e)];
      l[size_t(e)] = keep + h;
      const double up = objective();
      l[size_t(e)] = keep - h;
      const double down = objective();
      l[size_t(e)] = keep;
      EXPECT_NEAR(grad[size_t(e)], (up - down) / (2.0 * h), 2e-4) << "mode " << mode << " expert " << e;
    }
  }
}

TEST(MoeRoutingPlan, CapacityKeepsTheMostProbableOrTheEarliestAndPads) {
  TransformerConfig c = moe_config(2, 1);
  c.moe_expert_capacity_factor = 1.0f;  // capacity ceil(4 x 1 / 2) = 2
  // Tokens 0..3 all choose expert 0 with probabilities .2 .9 .5 .9; expert 1 gets nothing.
  const std::vector<int32_t> idx = {0, 0, 0, 0};
  const std::vector<float> p = {0.2f, 0.9f, 0.5f, 0.9f};
  RoutingPlan byprob = make_routing_plan(idx, p, 4, c);
  EXPECT_EQ(byprob.capacity, 2);
  EXPECT_EQ(byprob.dropped, 2);
  EXPECT_EQ(byprob.row_map, (std::vector<int32_t>{-1, 0, -1, 1}));  // .9 and .9 (ties: the earlier first)
  EXPECT_EQ(byprob.row_source, (std::vector<int32_t>{1, 3}));
  c.moe_token_drop_policy = MoeTokenDropPolicy::Position;
  RoutingPlan bypos = make_routing_plan(idx, p, 4, c);
  EXPECT_EQ(bypos.row_map, (std::vector<int32_t>{0, 1, -1, -1}));
  c.moe_pad_expert_input_to_capacity = true;
  RoutingPlan padded = make_routing_plan(idx, p, 4, c);
  EXPECT_EQ(padded.rows_per_expert, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(padded.row_source, (std::vector<int32_t>{0, 1, -1, -1}));
  c.moe_expert_capacity_factor = -1.0f;  // dropless: rows sorted by expert, then slot
  RoutingPlan all = make_routing_plan({1, 0, 1, 0}, p, 4, c);
  EXPECT_EQ(all.row_source, (std::vector<int32_t>{1, 3, 0, 2}));
  EXPECT_EQ(all.rows_per_expert, (std::vector<int64_t>{2, 2}));
}

namespace {

// A router over hidden = E whose logits are the tokens themselves (weight = identity).
struct IdentityRouter {
  ParamAndGradBuffer buf;
  std::unique_ptr<TopKRouter> router;
  explicit IdentityRouter(const TransformerConfig& c) {
    router = std::make_unique<TopKRouter>(buf, "decoder.layers.0.mlp.router", c, 0);
    buf.allocate(DType::F32, Device::cpu());
    Tensor w = buf.param(0);
    w.zero_();
    for (int e = 0; e < c.num_moe_experts; ++e) w.data<float>()[e * c.hidden_size + e] = 1.0f;
  }
  // The load-balancing and z losses of routing `logits` [T, E].
  MoEMetrics::Layer losses(const std::vector<float>& logits, int64_t T, int64_t seq) {
    Tensor x = Tensor::empty({T, int64_t(logits.size()) / T}, DType::F32);
    std::copy(logits.begin(), logits.end(), x.data<float>());
    MoEMetrics m;
    ForwardContext ctx;
    ctx.moe_metrics = &m;
    TopKRouter::Saved s;
    router->forward(x, seq, ctx, s);
    return m.layers.at(0);
  }
};

}  // namespace

TEST(MoeAuxLoss, IsTheCoefficientWhenBalancedAndMoreWhenNot) {
  TransformerConfig c = moe_config(4, 1);
  c.hidden_size = 4;
  c.moe_aux_loss_coeff = 0.01f;
  IdentityRouter r(c);
  // Four tokens, each sure of a different expert: balanced.
  std::vector<float> balanced(16, -20.0f), skewed(16, -20.0f);
  for (int t = 0; t < 4; ++t) balanced[size_t(t * 4 + t)] = 20.0f;
  for (int t = 0; t < 4; ++t) skewed[size_t(t * 4)] = 20.0f;
  EXPECT_NEAR(r.losses(balanced, 4, 4).load_balancing_loss, 0.01, 1e-9);
  EXPECT_NEAR(r.losses(skewed, 4, 4).load_balancing_loss, 0.04, 1e-9);  // E x coeff: all on one expert
}

// Megatron-LM #1545: sigmoid scores normalised by (sum + 1e-20) let a router push every sigmoid
// below 1e-20 and the loss toward 0. Normalised exactly, the loss stays at its minimum.
TEST(MoeAuxLoss, SigmoidScoresFarBelowEpsilonCannotHideTheLoss) {
  TransformerConfig c = moe_config(4, 1);
  c.hidden_size = 4;
  c.moe_router_score_function = MoeScoreFunction::Sigmoid;
  c.moe_aux_loss_coeff = 0.01f;
  IdentityRouter r(c);
  std::vector<float> tiny(16, -200.0f);  // sigmoid(-200) ~ 1e-87
  for (int t = 0; t < 4; ++t) tiny[size_t(t * 4 + t)] = -150.0f;
  EXPECT_GE(r.losses(tiny, 4, 4).load_balancing_loss, double(c.moe_aux_loss_coeff) * (1 - 1e-12));
}

TEST(MoeAuxLoss, SequenceLossAveragesOverSequences) {
  TransformerConfig c = moe_config(2, 1);
  c.hidden_size = 2;
  c.moe_aux_loss_coeff = 1.0f;
  c.moe_router_load_balancing_type = MoeLoadBalancing::SeqAuxLoss;
  IdentityRouter r(c);
  // Sequence 0 (2 tokens) all on expert 0, sequence 1 balanced: (2 + 1) / 2.
  const std::vector<float> l = {30, -30, 30, -30, 30, -30, -30, 30};
  EXPECT_NEAR(r.losses(l, 4, 2).load_balancing_loss, 1.5, 1e-9);
  c.moe_router_load_balancing_type = MoeLoadBalancing::AuxLoss;  // over the microbatch: 3 vs 1 -> (9 + 1) x 2 / 16
  IdentityRouter whole(c);
  EXPECT_NEAR(whole.losses(l, 4, 2).load_balancing_loss, 1.25, 1e-9);
}

// The auxiliary and z losses' gradient w.r.t. the router weight (what backward adds with no
// routing-probability gradient) against finite differences of the logged losses.
TEST(MoeAuxLoss, GradientMatchesFiniteDifferences) {
  for (int mode = 0; mode < 3; ++mode) {
    TransformerConfig c = moe_config(4, 2);
    c.moe_aux_loss_coeff = 0.1f;
    c.moe_z_loss_coeff = 0.01f;
    if (mode == 1) c.moe_router_score_function = MoeScoreFunction::Sigmoid;
    if (mode == 2) c.moe_router_load_balancing_type = MoeLoadBalancing::SeqAuxLoss;
    ParamAndGradBuffer buf;
    TopKRouter router(buf, "router", c, 0);
    buf.allocate(DType::F32, Device::cpu());
    router.init(0.5f, 3);
    const int64_t T = 8;
    Tensor x = random_tensor({T, c.hidden_size}, 40 + uint64_t(mode));
    auto total = [&] {
      MoEMetrics m;
      ForwardContext ctx;
      ctx.moe_metrics = &m;
      TopKRouter::Saved s;
      router.forward(x, 4, ctx, s);
      return m.layers.at(0).load_balancing_loss + m.layers.at(0).z_loss;
    };
    buf.zero_grads();
    {
      ForwardContext ctx;
      TopKRouter::Saved s;
      router.forward(x, 4, ctx, s);
      router.backward(std::vector<float>(size_t(T * c.moe_router_topk), 0.0f), s);
    }
    Tensor w = buf.param(0), g = buf.grad(0);
    const float h = 1e-3f;
    for (int64_t i = 0; i < w.numel(); i += 5) {
      float* p = w.data<float>() + i;
      const float keep = *p;
      *p = keep + h;
      const double up = total();
      *p = keep - h;
      const double down = total();
      *p = keep;
      const double num = (up - down) / (2.0 * h);
      EXPECT_NEAR(g.data<float>()[i], num, 2e-4 + 2e-2 * std::fabs(num)) << "mode " << mode << " w[" << i << "]";
    }
  }
}

namespace {

// The whole layer in eval mode (no auxiliary losses), fp32: output and input/parameter gradients.
void check_moe_layer(const TransformerConfig& c) {
  ParamAndGradBuffer dense, experts;
  MoELayer layer(dense, experts, "decoder.layers.0.mlp", c, 0, {});
  dense.allocate(DType::F32, Device::cpu());
  experts.allocate(DType::F32, Device::cpu());
  layer.init(0.3f, 0.3f, 11);
  Tensor x = random_tensor({2, 6, c.hidden_size}, 50);
  ForwardContext ctx;
  ctx.training = false;
  ctx.seq = 6;
  MoELayer::Saved saved;
  auto fwd = [&](const Tensor& in) { return layer.forward(in, ctx, saved); };
  auto bwd = [&](const Tensor& dy) { return layer.backward(dy, saved); };
  // The router and the input move the routing: small steps keep every choice. The experts' weights
  // do not: the default step keeps fp32 rounding of the output out of the difference.
  mt::testing::GradCheckOptions small;
  small.h = 2e-3f;
  mt::testing::check_gradients(dense, x, fwd, bwd, small);
  mt::testing::check_gradients(experts, x, fwd, bwd);
}

}  // namespace

TEST(MoeLayer, GradientsMatchFiniteDifferences) {
  TransformerConfig c = moe_config(4, 2);
  check_moe_layer(c);
}

TEST(MoeLayer, GradientsWithSharedExpertAndPreSoftmax) {
  TransformerConfig c = moe_config(4, 2);
  c.moe_shared_expert_intermediate_size = 16;
  c.moe_router_pre_softmax = true;
  check_moe_layer(c);
}

TEST(MoeLayer, GradientsWithCapacityDroppingAndSigmoidScores) {
  TransformerConfig c = moe_config(4, 2);
  c.moe_expert_capacity_factor = 0.5f;
  c.moe_router_score_function = MoeScoreFunction::Sigmoid;
  check_moe_layer(c);
}

TEST(MoeLayer, GeluExpertsToo) {
  TransformerConfig c = moe_config(3, 1);
  c.gated_linear_unit = false;
  c.activation = Activation::Gelu;
  check_moe_layer(c);
}

TEST(MoeLayer, GradientsWithEverythingOn) {
  TransformerConfig c = moe_config(4, 2);
  c.moe_shared_expert_intermediate_size = 16;
  c.moe_expert_capacity_factor = 0.5f;
  c.moe_router_score_function = MoeScoreFunction::Sigmoid;
  check_moe_layer(c);
}

// Group-limited routing (DeepSeek-V3): 8 experts in 4 groups of 2, top-4 from the best 2 groups,
// each group scored by the sum of its best 4 / 2 = 2 scores (here: the whole group). Expert 6 has
// the highest single score, but its group {6, 7} sums lower than {0, 1} and {2, 3}.
TEST(MoeRouter, GroupLimitedRoutingPicksOnlyFromTheBestGroups) {
  TransformerConfig c = moe_config(8, 4);
  c.moe_router_num_groups = 4;
  c.moe_router_group_topk = 2;
  const float logits[8] = {2.0f, 1.9f, 1.8f, 1.7f, 0.0f, 0.1f, 3.0f, -2.0f};
  int32_t idx[4];
  float p[4];
  route_token(logits, nullptr, c, idx, p);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 4), (std::vector<int32_t>{0, 1, 2, 3}));
  // The same logits without groups take expert 6 first.
  c.moe_router_num_groups = c.moe_router_group_topk = 0;
  route_token(logits, nullptr, c, idx, p);
  EXPECT_EQ(idx[0], 6);
  // The expert bias enters the group scores and the choice (ties to the lower expert): group {4, 5}
  // now beats {2, 3}; selection scores 2.1 (5), 2.0 (0), 2.0 (4), 1.9 (1).
  c.moe_router_num_groups = 4;
  c.moe_router_group_topk = 2;
  const float bias[8] = {0, 0, 0, 0, 2.0f, 2.0f, 0, 0};
  route_token(logits, bias, c, idx, p);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 4), (std::vector<int32_t>{5, 0, 4, 1}));
  double s = 0;
  for (float v : p) s += v;
  EXPECT_NEAR(s, 1.0, 1e-6);  // softmax over the chosen logits, without the bias
  EXPECT_NEAR(p[0], std::exp(0.1) / (std::exp(0.1) + std::exp(2.0) + 1.0 + std::exp(1.9)), 1e-6);
}
