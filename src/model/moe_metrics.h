#pragma once
// What MoE layers report per iteration (Megatron's aux-losses tracker): each layer's load-balancing
// and z losses (coefficients applied) summed over the microbatches, and how many of the router's
// top-k choices went to each expert (before capacity dropping). The trainer owns one, passes it in
// ForwardContext::moe_metrics, reduces it over ranks for the log line and the expert-bias update,
// and resets it each iteration. Indexed by global layer number (other layers stay empty).
#include <cstdint>
#include <vector>

namespace mt {

struct MoEMetrics {
  struct Layer {
    double load_balancing_loss = 0, z_loss = 0;  // sums over the microbatches routed
    int64_t microbatches = 0;
    std::vector<int64_t> tokens_per_expert;
  };
  std::vector<Layer> layers;

  Layer& layer(int number, int num_experts) {
    if (layers.size() <= size_t(number)) layers.resize(size_t(number) + 1);
    Layer& l = layers[size_t(number)];
    if (l.tokens_per_expert.empty()) l.tokens_per_expert.assign(size_t(num_experts), 0);
    return l;
  }
  void reset() { layers.clear(); }
};

}  // namespace mt
