#include "model/moe_routing_plan.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mt {

RoutingPlan make_routing_plan(const std::vector<int32_t>& indices, const std::vector<float>& probs, int64_t T,
                              const TransformerConfig& cfg) {
  const int E = cfg.num_moe_experts, k = cfg.moe_router_topk;
  const int64_t slots = T * k;
  MT_CHECK(int64_t(indices.size()) == slots && int64_t(probs.size()) == slots, "routing plan: {} choices for {} x {}",
           indices.size(), T, k);
  // Each expert's slots in slot order.
  std::vector<std::vector<int32_t>> by_expert(static_cast<size_t>(E));
  for (int64_t i = 0; i < slots; ++i) {
    const int32_t e = indices[size_t(i)];
    MT_CHECK(e >= 0 && e < E, "routing plan: expert {} of {}", e, E);
    by_expert[size_t(e)].push_back(int32_t(i));
  }
  RoutingPlan p;
  p.row_map.assign(size_t(slots), -1);
  p.rows_per_expert.assign(size_t(E), 0);
  if (cfg.moe_expert_capacity_factor >= 0.0f) {
    p.capacity = int64_t(std::ceil(double(slots) / double(E) * double(cfg.moe_expert_capacity_factor)));
    for (auto& v : by_expert) {
      if (int64_t(v.size()) <= p.capacity) continue;
      p.dropped += int64_t(v.size()) - p.capacity;
      if (cfg.moe_token_drop_policy == MoeTokenDropPolicy::Probs) {
        // Keep the most probable, then restore slot order among the kept.
        std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
        v.resize(size_t(p.capacity));
        std::sort(v.begin(), v.end());
      } else {
        v.resize(size_t(p.capacity));
      }
    }
  }
  const bool pad = p.capacity >= 0 && cfg.moe_pad_expert_input_to_capacity;
  for (int e = 0; e < E; ++e) {
    const auto& v = by_expert[size_t(e)];
    for (int32_t slot : v) {
      p.row_map[size_t(slot)] = int32_t(p.row_source.size());
      p.row_source.push_back(slot);
    }
    int64_t n = int64_t(v.size());
    if (pad)
      for (; n < p.capacity; ++n) p.row_source.push_back(-1);
    p.rows_per_expert[size_t(e)] = n;
  }
  return p;
}

}  // namespace mt
