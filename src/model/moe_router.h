#pragma once
// TopKRouter (Megatron-Core's name): each token's scores over the E experts from a linear layer
// (`mlp.router.weight` [E, C], replicated over tensor parallelism), its top-k experts and their
// routing probabilities, and the router's auxiliary losses:
//   softmax (default): the top-k logits, softmax over them (Mixtral; Qwen3-MoE's norm_topk_prob);
//   softmax with pre_softmax: softmax over all E, then the top-k of those probabilities;
//   sigmoid: sigmoid scores, the top-k normalised to sum to 1 (k > 1);
//   times topk_scaling_factor when set. With an expert bias (aux-loss-free balancing) the choice
//   ranks score + bias; the probabilities use the scores alone. Ties go to the lower expert.
// Losses, per microbatch (T tokens, f_e = top-k choices of expert e, before any capacity drop, so
// dropping or padding cannot hide imbalance — Megatron-LM #1513, #1617):
//   aux_loss:      coeff E / (k T^2) sum_e P_e f_e,   P_e = sum_t p_te with p_t the token's
//                  scores over all E (softmax, or sigmoid normalised exactly, without an epsilon
//                  that lets tiny sigmoids pull the loss below its minimum — #1545). Minimum coeff.
//   seq_aux_loss:  the same over each sequence, averaged over the microbatch's sequences.
//   global_aux_loss: coeff E / (k T T_g) sum_e P_e F_e with F_e and T_g the choices and tokens
//                  summed over the data-parallel group (arXiv 2501.11873; Megatron-LM #3769's scale):
//                  aux_loss when the group is one rank.
//   z_loss:        coeff mean_t logsumexp(logits_t)^2.
// The routing math runs on the host in double precision on fp32 logits (one device-to-host copy
// of [T, E] per layer and pass), so it is the same on every device and layout.
#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "model/param_buffer.h"
#include "model/transformer_config.h"

namespace mt {

class TopKRouter {
 public:
  struct Saved {
    Tensor x;                    // [T, C], the routed tokens
    int64_t tokens = 0;
    std::vector<float> logits;   // host [T, E]
    std::vector<float> probs;    // host [T, k], the routing weights
    std::vector<int32_t> indices;  // host [T, k], the chosen experts
    std::vector<float> dlogits_aux;  // host [T, E]: the auxiliary losses' gradient (empty: none)
  };
  // global_group: where global_aux_loss sums the loads (null: this rank alone).
  TopKRouter(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg, int layer_number,
             Communicator* global_group = nullptr);
  void init(float std, uint64_t seed) const;

  // x [T, C]: the tokens this rank routes (a whole microbatch; seq_length splits it into sequences
  // for seq_aux_loss). Fills saved (probs, indices); when ctx.training, the auxiliary losses are
  // recorded in ctx.moe_metrics and their gradient (weighted by ctx.moe_loss_scale) kept for backward.
  void forward(const Tensor& x, int64_t seq_length, const ForwardContext& ctx, Saved& saved) const;
  // dprobs: host [T, k], the loss gradient of the routing weights. Accumulates the router weight's
  // gradient and returns dx [T, C] (x's dtype and device).
  Tensor backward(const std::vector<float>& dprobs, Saved& saved) const;

  // Aux-loss-free balancing: after a step, bias_e += rate * sign(mean - tokens_e) over the step's
  // global token counts (identical on every rank that holds the layer).
  void update_expert_bias(const std::vector<int64_t>& tokens_per_expert) const;
  // The expert bias (fp32 [E] on the host; undefined without it), a persistent buffer.
  const Tensor& expert_bias() const { return expert_bias_; }
  const std::string& expert_bias_name() const { return bias_name_; }

 private:
  TransformerConfig cfg_;
  int layer_number_;
  ParamAndGradBuffer& buf_;
  ParamAndGradBuffer::Id w_;
  Communicator* global_;
  Tensor expert_bias_;
  std::string bias_name_;
};

// The routing of one token (exposed for tests): logits [E] -> the k chosen experts and their
// probabilities; dprobs [k] -> dlogits [E] (overwritten).
void route_token(const float* logits, const float* expert_bias, const TransformerConfig& cfg, int32_t* indices,
                 float* probs);
void route_token_backward(const float* logits, const int32_t* indices, const float* dprobs,
                          const TransformerConfig& cfg, double* dlogits);

}  // namespace mt
