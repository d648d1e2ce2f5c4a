#include "train/moe_logging.h"

#include <fmt/format.h>

namespace mt {

MoEMetrics reduce_moe_metrics(const MoEMetrics& local, const TransformerConfig& cfg, ProcessGroups& groups) {
  const int L = cfg.num_layers, E = cfg.num_moe_experts;
  // Per layer: [aux mean, z mean, counts...]. Each layer lives on one pipeline stage and is the
  // same on every tensor-parallel rank: summed over data parallel and pipeline only.
  const int row = 2 + E;
  std::vector<double> v(size_t(L) * size_t(row), 0.0);
  for (int l = 0; l < L && l < int(local.layers.size()); ++l) {
    const MoEMetrics::Layer& m = local.layers[size_t(l)];
    if (m.microbatches == 0) continue;
    double* r = &v[size_t(l) * size_t(row)];
    r[0] = m.load_balancing_loss / double(m.microbatches);
    r[1] = m.z_loss / double(m.microbatches);
    for (int e = 0; e < E; ++e) r[2 + e] = double(m.tokens_per_expert[size_t(e)]);
  }
  const int dp = groups.dp().size();
  if (dp > 1) groups.dp().all_reduce_f64(v.data(), int(v.size()));
  if (groups.pp().size() > 1) groups.pp().all_reduce_f64(v.data(), int(v.size()));
  MoEMetrics g;
  for (int l = 0; l < L; ++l) {
    if (!cfg.is_moe_layer(l)) continue;
    MoEMetrics::Layer& m = g.layer(l, E);
    const double* r = &v[size_t(l) * size_t(row)];
    m.load_balancing_loss = r[0] / dp;
    m.z_loss = r[1] / dp;
    m.microbatches = 1;
    for (int e = 0; e < E; ++e) m.tokens_per_expert[size_t(e)] = int64_t(r[2 + e]);
  }
  return g;
}

std::vector<std::pair<std::string, double>> moe_log_fields(const MoEMetrics& global, const TransformerConfig& cfg,
                                                           bool per_layer) {
  std::vector<std::pair<std::string, double>> out;
  const bool aux = cfg.moe_aux_loss_coeff > 0 && cfg.moe_router_load_balancing_type != MoeLoadBalancing::None;
  const bool z = cfg.moe_z_loss_coeff > 0;
  if (!aux && !z) return out;
  double sa = 0, sz = 0;
  int n = 0;
  for (size_t l = 0; l < global.layers.size(); ++l) {
    if (!cfg.is_moe_layer(int(l))) continue;
    sa += global.layers[l].load_balancing_loss;
    sz += global.layers[l].z_loss;
    ++n;
  }
  if (n == 0) return out;
  if (aux) out.emplace_back("load_balancing_loss", sa / n);
  if (z) out.emplace_back("z_loss", sz / n);
  if (per_layer)
    for (size_t l = 0; l < global.layers.size(); ++l) {
      if (!cfg.is_moe_layer(int(l))) continue;
      if (aux) out.emplace_back(fmt::format("layer_{}_load_balancing_loss", l), global.layers[l].load_balancing_loss);
      if (z) out.emplace_back(fmt::format("layer_{}_z_loss", l), global.layers[l].z_loss);
    }
  return out;
}

std::string format_tokens_per_expert(const MoEMetrics& global, const TransformerConfig& cfg) {
  std::string s;
  for (size_t l = 0; l < global.layers.size(); ++l) {
    if (!cfg.is_moe_layer(int(l))) continue;
    s += fmt::format(" layer {} tokens per expert:", l);
    for (int64_t c : global.layers[l].tokens_per_expert) s += fmt::format(" {}", c);
    s += "\n";
  }
  return s;
}

}  // namespace mt
