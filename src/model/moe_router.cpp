#include "model/moe_router.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "model/init_method.h"
#include "model/moe_metrics.h"

namespace mt {
namespace {

constexpr int kMaxTopK = 64;    // the per-token buffers' bound on --moe-router-topk
constexpr int kMaxGroups = 64;  // and on --moe-router-num-groups

bool is_sigmoid(const TransformerConfig& c) { return c.moe_router_score_function == MoeScoreFunction::Sigmoid; }
double scaling(const TransformerConfig& c) {
  return c.moe_router_topk_scaling_factor != 0.0f ? double(c.moe_router_topk_scaling_factor) : 1.0;
}
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
// log sigmoid(x), finite for every finite x.
double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

// Softmax of v[ids] (all of v when ids is null) into out, in double.
void softmax(const double* v, const int32_t* ids, int n, double* out) {
  double m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::max(m, v[ids ? ids[i] : i]);
  double s = 0;
  for (int i = 0; i < n; ++i) s += (out[i] = std::exp(v[ids ? ids[i] : i] - m));
  for (int i = 0; i < n; ++i) out[i] /= s;
}

// The token's scores over all experts for the auxiliary loss: softmax, or sigmoids normalised to
// sum to 1 (through log-sigmoids: exact for any logits, no epsilon).
void aux_scores(const float* logits, int E, bool sig, double* scores) {
  std::vector<double> v(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) v[size_t(e)] = sig ? log_sigmoid(logits[e]) : double(logits[e]);
  softmax(v.data(), nullptr, E, scores);
}

// dlogits += the gradient of sum_e c_e score_e (aux_scores) w.r.t. the logits.
void aux_scores_backward(const float* logits, const double* scores, const double* c, int E, bool sig,
                         double* dlogits) {
  double dot = 0;
  for (int e = 0; e < E; ++e) dot += scores[e] * c[e];
  for (int e = 0; e < E; ++e) {
    const double g = scores[e] * (c[e] - dot);
    dlogits[e] += sig ? g * (1.0 - sigmoid(logits[e])) : g;  // d log sigmoid(x) / dx = 1 - sigmoid(x)
  }
}

}  // namespace

namespace {

// Per-thread buffers for the per-token routing (no allocation per token): E doubles twice, E indices.
struct RouteScratch {
  std::vector<double> a, b;
  std::vector<int32_t> order;
};
RouteScratch& route_scratch(int E) {
  thread_local RouteScratch s;
  if (s.a.size() < size_t(E)) {
    s.a.resize(size_t(E));
    s.b.resize(size_t(E));
    s.order.resize(size_t(E));
  }
  return s;
}

}  // namespace

// Group-limited routing (Megatron's group_limited_topk): each group's score is the sum of its best
// k / group_topk selection scores; the experts outside the group_topk best groups (ties to the
// lower group) get -inf, so the top-k can never pick them.
static void limit_to_top_groups(double* sel, const TransformerConfig& cfg) {
  const int E = cfg.num_moe_experts, G = cfg.moe_router_num_groups, per = E / G;
  const int best = cfg.moe_router_topk / cfg.moe_router_group_topk;
  double group[kMaxGroups], top[kMaxTopK];
  for (int g = 0; g < G; ++g) {
    std::partial_sort_copy(sel + g * per, sel + (g + 1) * per, top, top + best, std::greater<double>());
    group[g] = 0;
    for (int i = 0; i < best; ++i) group[g] += top[i];
  }
  int32_t order[kMaxGroups];
  std::iota(order, order + G, 0);
  std::partial_sort(order, order + cfg.moe_router_group_topk, order + G, [&](int32_t a, int32_t b) {
    return group[a] > group[b] || (group[a] == group[b] && a < b);
  });
  bool keep[kMaxGroups] = {};
  for (int i = 0; i < cfg.moe_router_group_topk; ++i) keep[order[i]] = true;
  for (int g = 0; g < G; ++g)
    if (!keep[g])
      for (int e = g * per; e < (g + 1) * per; ++e) sel[e] = -INFINITY;
}

void route_token(const float* logits, const float* expert_bias, const TransformerConfig& cfg, int32_t* indices,
                 float* probs) {
  const int E = cfg.num_moe_experts, k = cfg.moe_router_topk;
  const bool sig = is_sigmoid(cfg);
  RouteScratch& scr = route_scratch(E);
  double* score = scr.a.data();
  double* sel = scr.b.data();
  if (sig) {
    for (int e = 0; e < E; ++e) score[e] = sigmoid(logits[e]);
  } else if (cfg.moe_router_pre_softmax) {
    for (int e = 0; e < E; ++e) sel[e] = logits[e];
    softmax(sel, nullptr, E, score);
  } else {
    for (int e = 0; e < E; ++e) score[e] = logits[e];
  }
  for (int e = 0; e < E; ++e) sel[e] = score[e] + (expert_bias ? double(expert_bias[e]) : 0.0);
  if (cfg.moe_router_num_groups > 0) limit_to_top_groups(sel, cfg);
  int32_t* order = scr.order.data();
  std::iota(order, order + E, 0);
  std::partial_sort(order, order + k, order + E, [&](int32_t a, int32_t b) {
    return sel[a] > sel[b] || (sel[a] == sel[b] && a < b);
  });
  std::copy(order, order + k, indices);
  double p[kMaxTopK];
  if (sig) {
    if (k > 1) {
      for (int e = 0; e < E; ++e) sel[e] = log_sigmoid(logits[e]);
      softmax(sel, indices, k, p);
    } else {
      p[0] = score[indices[0]];
    }
  } else if (cfg.moe_router_pre_softmax) {
    for (int j = 0; j < k; ++j) p[j] = score[indices[j]];
  } else {
    softmax(score, indices, k, p);
  }
  const double sc = scaling(cfg);
  for (int j = 0; j < k; ++j) probs[j] = float(p[j] * sc);
}

void route_token_backward(const float* logits, const int32_t* indices, const float* dprobs,
                          const TransformerConfig& cfg, double* dlogits) {
  const int E = cfg.num_moe_experts, k = cfg.moe_router_topk;
  const double sc = scaling(cfg);
  std::fill(dlogits, dlogits + E, 0.0);
  double g[kMaxTopK], p[kMaxTopK];
  for (int j = 0; j < k; ++j) g[j] = double(dprobs[j]) * sc;
  RouteScratch& scr = route_scratch(E);
  double* l = scr.a.data();
  if (is_sigmoid(cfg)) {
    if (k == 1) {
      const double s = sigmoid(logits[indices[0]]);
      dlogits[indices[0]] = g[0] * s * (1.0 - s);
      return;
    }
    // p_j = sigmoid_j / sum_i sigmoid_i over the chosen: dp_j / dl_i = p_j (delta_ij - p_i) (1 - sigmoid_i).
    for (int e = 0; e < E; ++e) l[e] = log_sigmoid(logits[e]);
    softmax(l, indices, k, p);
    double dot = 0;
    for (int j = 0; j < k; ++j) dot += p[j] * g[j];
    for (int j = 0; j < k; ++j) dlogits[indices[j]] = p[j] * (g[j] - dot) * (1.0 - sigmoid(logits[indices[j]]));
    return;
  }
  for (int e = 0; e < E; ++e) l[e] = logits[e];
  if (cfg.moe_router_pre_softmax) {
    double* s = scr.b.data();
    softmax(l, nullptr, E, s);
    // g spread over the experts: dlogits holds it first, then the softmax's backward in place.
    for (int j = 0; j < k; ++j) dlogits[indices[j]] += g[j];
    double dot = 0;
    for (int e = 0; e < E; ++e) dot += s[e] * dlogits[e];
    for (int e = 0; e < E; ++e) dlogits[e] = s[e] * (dlogits[e] - dot);
    return;
  }
  softmax(l, indices, k, p);
  double dot = 0;
  for (int j = 0; j < k; ++j) dot += p[j] * g[j];
  for (int j = 0; j < k; ++j) dlogits[indices[j]] = p[j] * (g[j] - dot);
}

TopKRouter::TopKRouter(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                       int layer_number, Communicator* global_group)
    : cfg_(cfg), layer_number_(layer_number), buf_(buf), global_(global_group && global_group->size() > 1 ? global_group : nullptr) {
  const int E = cfg.num_moe_experts;
  MT_CHECK(E >= 1 && cfg.moe_router_topk >= 1 && cfg.moe_router_topk <= E && cfg.moe_router_topk <= kMaxTopK,
           "{}: top-{} of {} experts (at most {})", prefix, cfg.moe_router_topk, E, kMaxTopK);
  const int G = cfg.moe_router_num_groups, GK = cfg.moe_router_group_topk;
  MT_CHECK(G == 0 || (G <= kMaxGroups && E % G == 0 && GK >= 1 && GK <= G && cfg.moe_router_topk % GK == 0 &&
                      cfg.moe_router_topk / GK <= E / G),
           "{}: top-{} of {} experts in {} groups, {} groups per token", prefix, cfg.moe_router_topk, E, G, GK);
  w_ = buf.add(prefix + ".weight", {E, cfg.hidden_size}, false);
  buf.set_overwrites_first_grad(w_);
  if (cfg.moe_router_enable_expert_bias) {
    expert_bias_ = Tensor::zeros({E}, DType::F32);
    bias_name_ = prefix + ".expert_bias";
  }
}

void TopKRouter::init(float std, uint64_t seed) const {
  init_normal(buf_, w_, std, seed);
  if (expert_bias_.defined()) expert_bias_.zero_();
}

void TopKRouter::forward(const Tensor& x, int64_t seq_length, const ForwardContext& ctx, Saved& s) const {
  const int E = cfg_.num_moe_experts, k = cfg_.moe_router_topk;
  const int64_t T = x.size(0);
  s.x = x;
  s.tokens = T;
  Tensor logits = Tensor::empty({T, E}, DType::F32, x.device());
  gemm(x, false, buf_.param(w_).view({E, cfg_.hidden_size}), true, logits);
  const Tensor host = logits.is_cuda() ? logits.to(Device::cpu()) : logits;
  s.logits.assign(host.data<float>(), host.data<float>() + T * E);
  s.probs.resize(size_t(T * k));
  s.indices.resize(size_t(T * k));
  const float* bias = expert_bias_.defined() ? expert_bias_.data<float>() : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    route_token(&s.logits[size_t(t * E)], bias, cfg_, &s.indices[size_t(t * k)], &s.probs[size_t(t * k)]);
  s.dlogits_aux.clear();
  if (!ctx.training) return;

  MoEMetrics::Layer* m = ctx.moe_metrics ? &ctx.moe_metrics->layer(layer_number_, E) : nullptr;
  if (m) {
    for (int32_t e : s.indices) ++m->tokens_per_expert[size_t(e)];
    ++m->microbatches;
  }
  const bool aux = cfg_.moe_aux_loss_coeff > 0 && cfg_.moe_router_load_balancing_type != MoeLoadBalancing::None;
  const bool z = cfg_.moe_z_loss_coeff > 0;
  if (!aux && !z) return;
  std::vector<double> dl(size_t(T * E), 0.0);
  if (aux) {
    // Groups of tokens the loss balances over: the microbatch, or each of its sequences.
    const bool per_seq = cfg_.moe_router_load_balancing_type == MoeLoadBalancing::SeqAuxLoss;
    const int64_t S = per_seq ? seq_length : T;
    MT_CHECK(S > 0 && T % S == 0, "seq_aux_loss: {} tokens are not whole sequences of {}", T, S);
    const int64_t groups = T / S;
    const bool sig = is_sigmoid(cfg_);
    std::vector<double> scores(size_t(T * E));
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) aux_scores(&s.logits[size_t(t * E)], E, sig, &scores[size_t(t * E)]);
    double loss = 0;
    for (int64_t g = 0; g < groups; ++g) {
      std::vector<double> P(size_t(E), 0.0), f(size_t(E) + 1, 0.0);
      for (int64_t t = g * S; t < (g + 1) * S; ++t) {
        for (int e = 0; e < E; ++e) P[size_t(e)] += scores[size_t(t * E + e)];
        for (int j = 0; j < k; ++j) f[size_t(s.indices[size_t(t * k + j)])] += 1.0;
      }
      // global_aux_loss: the loads and the token count over the data-parallel group.
      f[size_t(E)] = double(S);
      if (cfg_.moe_router_load_balancing_type == MoeLoadBalancing::GlobalAuxLoss && global_)
        global_->all_reduce_f64(f.data(), E + 1);
      // The group's loss, averaged over groups: c_e = d loss / d score_te for every token t of the group.
      const double w = double(cfg_.moe_aux_loss_coeff) * E / (double(k) * double(S) * f[size_t(E)] * double(groups));
      std::vector<double> c(static_cast<size_t>(E));
      for (int e = 0; e < E; ++e) {
        loss += w * P[size_t(e)] * f[size_t(e)];
        c[size_t(e)] = w * f[size_t(e)] * ctx.moe_loss_scale;
      }
#pragma omp parallel for schedule(static)
      for (int64_t t = g * S; t < (g + 1) * S; ++t)
        aux_scores_backward(&s.logits[size_t(t * E)], &scores[size_t(t * E)], c.data(), E, sig, &dl[size_t(t * E)]);
    }
    if (m) m->load_balancing_loss += loss;
  }
  if (z) {
    // coeff mean_t lse_t^2: d / d logit_te = coeff 2 lse_t softmax_te / T.
    std::vector<double> lse2(static_cast<size_t>(T));
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* l = &s.logits[size_t(t * E)];
      double mx = -INFINITY, sum = 0;
      for (int e = 0; e < E; ++e) mx = std::max(mx, double(l[e]));
      for (int e = 0; e < E; ++e) sum += std::exp(double(l[e]) - mx);
      const double lse = mx + std::log(sum);
      lse2[size_t(t)] = lse * lse;
      const double w = double(cfg_.moe_z_loss_coeff) * 2.0 * lse / double(T) * ctx.moe_loss_scale;
      for (int e = 0; e < E; ++e) dl[size_t(t * E + e)] += w * std::exp(double(l[e]) - mx) / sum;
    }
    double zl = 0;
    for (double v : lse2) zl += v;
    if (m) m->z_loss += double(cfg_.moe_z_loss_coeff) * zl / double(T);
  }
  s.dlogits_aux.assign(dl.begin(), dl.end());
}

Tensor TopKRouter::backward(const std::vector<float>& dprobs, Saved& s) const {
  const int E = cfg_.num_moe_experts, k = cfg_.moe_router_topk;
  const int64_t T = s.tokens;
  MT_CHECK(int64_t(dprobs.size()) == T * k, "router backward: {} probability gradients for {} tokens", dprobs.size(), T);
  Tensor dl = Tensor::empty({T, E}, DType::F32);
  float* d = dl.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    thread_local std::vector<double> g;
    g.resize(size_t(E));
    route_token_backward(&s.logits[size_t(t * E)], &s.indices[size_t(t * k)], &dprobs[size_t(t * k)], cfg_, g.data());
    for (int e = 0; e < E; ++e)
      d[t * E + e] = float(g[size_t(e)] + (s.dlogits_aux.empty() ? 0.0 : double(s.dlogits_aux[size_t(t * E + e)])));
  }
  Tensor dlogits = s.x.is_cuda() ? dl.to(s.x.device()) : dl;
  if (s.x.dtype() != DType::F32) {  // the GEMMs take the model dtype: rounded once
    Tensor rounded = Tensor::empty({T, E}, s.x.dtype(), s.x.device());
    cast(dlogits, rounded);
    dlogits = rounded;
  }
  const Tensor w = buf_.param(w_).view({E, cfg_.hidden_size});
  Tensor dx = Tensor::empty(s.x.shape(), s.x.dtype(), s.x.device());
  gemm(dlogits, false, w, false, dx);
  gemm(dlogits, true, s.x, false, buf_.grad(w_).view({E, cfg_.hidden_size}), 1.0f, buf_.grad_beta(w_));
  s = Saved{};
  return dx;
}

void TopKRouter::update_expert_bias(const std::vector<int64_t>& tokens) const {
  if (!expert_bias_.defined()) return;
  const int E = cfg_.num_moe_experts;
  MT_CHECK(int(tokens.size()) == E, "expert bias update: {} counts for {} experts", tokens.size(), E);
  double mean = 0;
  for (int64_t c : tokens) mean += double(c);
  mean /= E;
  float* b = expert_bias_.data<float>();
  for (int e = 0; e < E; ++e) {
    const double diff = mean - double(tokens[size_t(e)]);
    b[e] += float(cfg_.moe_router_bias_update_rate * ((diff > 0) - (diff < 0)));
  }
}

}  // namespace mt
