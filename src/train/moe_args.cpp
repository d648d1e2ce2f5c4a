#include "train/moe_args.h"

#include <cctype>
#include <string>

#include "core/error.h"

namespace mt {

void validate_moe_args(const TrainingArgs& a) {
  const bool moe = a.num_experts > 0;
  if (a.num_experts < 0) MT_USER_ERROR("--num-experts must be >= 0, got {}", a.num_experts);
  if (!moe) {
    if (a.moe_router_enable_expert_bias || a.moe_shared_expert_intermediate_size > 0 || a.moe_expert_capacity_factor >= 0)
      MT_USER_ERROR("MoE flags need --num-experts");
    return;
  }
  if (a.moe_router_topk < 1 || a.moe_router_topk > a.num_experts || a.moe_router_topk > 64)
    MT_USER_ERROR("--moe-router-topk {} must be between 1 and --num-experts {} (and at most 64)", a.moe_router_topk,
                  a.num_experts);
  const int G = a.moe_router_num_groups, GK = a.moe_router_group_topk;
  if (G < 0 || GK < 0 || (G > 0) != (GK > 0))
    MT_USER_ERROR("--moe-router-num-groups {} and --moe-router-group-topk {} go together (both positive, or both 0)",
                  G, GK);
  if (G > 0 && (a.num_experts % G != 0 || G > 64 || GK > G || a.moe_router_topk % GK != 0 ||
                a.moe_router_topk / GK > a.num_experts / G))
    MT_USER_ERROR("--moe-router-num-groups {} --moe-router-group-topk {}: the groups must split --num-experts {} "
                  "evenly (at most 64 groups), group-topk <= groups, and --moe-router-topk {} must be a multiple of "
                  "group-topk with topk / group-topk <= experts per group",
                  G, GK, a.num_experts, a.moe_router_topk);
  if (!a.moe_router_dtype.empty() && a.moe_router_dtype != "fp32" && a.moe_router_dtype != "fp64")
    MT_USER_ERROR("--moe-router-dtype '{}' must be fp32 or fp64", a.moe_router_dtype);
  if (a.moe_router_score_function != "softmax" && a.moe_router_score_function != "sigmoid")
    MT_USER_ERROR("--moe-router-score-function '{}' must be softmax or sigmoid", a.moe_router_score_function);
  if (a.moe_router_pre_softmax && a.moe_router_score_function != "softmax")
    MT_USER_ERROR("--moe-router-pre-softmax needs --moe-router-score-function softmax");
  const std::string& lb = a.moe_router_load_balancing_type;
  if (lb != "aux_loss" && lb != "seq_aux_loss" && lb != "global_aux_loss" && lb != "none")
    MT_USER_ERROR("--moe-router-load-balancing-type '{}' must be aux_loss, seq_aux_loss, global_aux_loss or none", lb);
  if (a.moe_aux_loss_coeff < 0 || a.moe_z_loss_coeff < 0)
    MT_USER_ERROR("--moe-aux-loss-coeff and --moe-z-loss-coeff must be >= 0");
  if (a.moe_ffn_hidden_size < 0 || a.moe_shared_expert_intermediate_size < 0)
    MT_USER_ERROR("--moe-ffn-hidden-size and --moe-shared-expert-intermediate-size must be >= 0");
  if (a.moe_token_drop_policy != "probs" && a.moe_token_drop_policy != "position")
    MT_USER_ERROR("--moe-token-drop-policy '{}' must be probs or position", a.moe_token_drop_policy);
  if (a.moe_pad_expert_input_to_capacity && a.moe_expert_capacity_factor < 0)
    MT_USER_ERROR("--moe-pad-expert-input-to-capacity needs --moe-expert-capacity-factor");
  if (a.moe_token_dispatcher_type != "alltoall" && a.moe_token_dispatcher_type != "allgather")
    MT_USER_ERROR("--moe-token-dispatcher-type '{}' must be alltoall or allgather", a.moe_token_dispatcher_type);
  if (a.expert_tensor_parallel_size != 0 && a.expert_tensor_parallel_size != a.tensor_model_parallel_size)
    MT_USER_ERROR("--expert-tensor-parallel-size {} must equal --tensor-model-parallel-size {} (other expert "
                  "tensor-parallel sizes are not built)",
                  a.expert_tensor_parallel_size, a.tensor_model_parallel_size);
  if (!a.disable_bias_linear) MT_USER_ERROR("--num-experts: MoE experts have no biases; add --disable-bias-linear");
  if (a.num_experts % a.expert_model_parallel_size != 0)
    MT_USER_ERROR("--num-experts {} is not divisible by --expert-model-parallel-size {}", a.num_experts,
                  a.expert_model_parallel_size);
  parse_moe_layer_freq(a.moe_layer_freq, a.num_layers);
}

void apply_moe_args(const TrainingArgs& a, TransformerConfig& c) {
  c.num_moe_experts = a.num_experts;
  if (a.num_experts <= 0) return;
  c.moe_ffn_hidden_size = a.moe_ffn_hidden_size;
  c.moe_router_topk = a.moe_router_topk;
  c.moe_router_score_function =
      a.moe_router_score_function == "sigmoid" ? MoeScoreFunction::Sigmoid : MoeScoreFunction::Softmax;
  c.moe_router_pre_softmax = a.moe_router_pre_softmax;
  c.moe_router_topk_scaling_factor = float(a.moe_router_topk_scaling_factor);
  c.moe_router_num_groups = a.moe_router_num_groups;
  c.moe_router_group_topk = a.moe_router_group_topk;
  c.moe_layer_pattern = parse_moe_layer_freq(a.moe_layer_freq, a.num_layers);
  c.moe_shared_expert_intermediate_size = a.moe_shared_expert_intermediate_size;
  const std::string& lb = a.moe_router_load_balancing_type;
  c.moe_router_load_balancing_type = lb == "seq_aux_loss"      ? MoeLoadBalancing::SeqAuxLoss
                                     : lb == "global_aux_loss" ? MoeLoadBalancing::GlobalAuxLoss
                                     : lb == "none"            ? MoeLoadBalancing::None
                                                               : MoeLoadBalancing::AuxLoss;
  c.moe_aux_loss_coeff = float(a.moe_aux_loss_coeff);
  c.moe_z_loss_coeff = float(a.moe_z_loss_coeff);
  c.moe_router_enable_expert_bias = a.moe_router_enable_expert_bias;
  c.moe_router_bias_update_rate = float(a.moe_router_bias_update_rate);
  c.moe_expert_capacity_factor = float(a.moe_expert_capacity_factor);
  c.moe_token_drop_policy = a.moe_token_drop_policy == "position" ? MoeTokenDropPolicy::Position : MoeTokenDropPolicy::Probs;
  c.moe_pad_expert_input_to_capacity = a.moe_pad_expert_input_to_capacity;
  c.moe_token_dispatcher_type =
      a.moe_token_dispatcher_type == "allgather" ? MoeTokenDispatcher::AllGather : MoeTokenDispatcher::AllToAll;
}

}  // namespace mt
