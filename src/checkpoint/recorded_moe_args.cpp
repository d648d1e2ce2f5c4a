#include "checkpoint/recorded_moe_args.h"

#include <string>

namespace mt {

void read_recorded_moe_args(const nlohmann::json& a, TransformerConfig& c) {
  c.num_moe_experts = a.value("num_experts", 0);
  if (!c.is_moe()) return;
  c.moe_ffn_hidden_size = a.value("moe_ffn_hidden_size", 0);
  c.moe_router_topk = a.value("moe_router_topk", c.moe_router_topk);
  c.moe_layer_pattern = parse_moe_layer_freq(a.value("moe_layer_freq", std::string("1")), c.num_layers);
  c.moe_shared_expert_intermediate_size = a.value("moe_shared_expert_intermediate_size", 0);
  c.moe_router_score_function = a.value("moe_router_score_function", std::string("softmax")) == "sigmoid"
                                    ? MoeScoreFunction::Sigmoid
                                    : MoeScoreFunction::Softmax;
  c.moe_router_pre_softmax = a.value("moe_router_pre_softmax", false);
  c.moe_router_topk_scaling_factor = a.value("moe_router_topk_scaling_factor", 0.0f);
  c.moe_router_num_groups = a.value("moe_router_num_groups", 0);
  c.moe_router_group_topk = a.value("moe_router_group_topk", 0);
  c.moe_aux_loss_coeff = a.value("moe_aux_loss_coeff", 0.0f);
  c.moe_router_enable_expert_bias = a.value("moe_router_enable_expert_bias", false);
}

}  // namespace mt
