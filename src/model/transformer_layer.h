#pragma once
// One pre-norm transformer layer, every family's block (the spec picks each slot's module):
//   x1 = x  + dropout(self_attention(input_layernorm(x)))
//   y  = x1 + dropout(mlp(pre_mlp_layernorm(x1)))
#include <string>
#include <vector>

#include "model/attention.h"
#include "model/mlp.h"
#include "model/moe_layer.h"
#include "model/multi_latent_attention.h"
#include "model/norm.h"
#include "model/token_positions.h"
#include "model/transformer_layer_spec.h"

namespace mt {

// Where a rank's hidden states [n, C] sit in the microbatch's [B, S, C] element order, as runs:
// elements [offset, offset + count) of the rank's tensor are elements [index, index + count) of
// the whole. Hidden dropout draws its mask at those indices, so every layout drops the same
// elements. One run without context parallelism: with sequence parallelism tensor-parallel rank
// r holds tokens [r n, (r + 1) n), else all of them; with context parallelism (positions) the
// rank's tokens are runs of each sample's sequence (token_positions.h), cut again by sequence
// parallelism.
struct HiddenRun {
  int64_t offset = 0, count = 0;
  uint64_t index = 0;
};
std::vector<HiddenRun> hidden_element_runs(const ModelParallelConfig& par, int64_t local_numel, int64_t hidden,
                                           const TokenPositions* positions);
// Dropout of the hidden states x (contiguous) in place, and its backward dy -> dx (may alias), run by run.
void hidden_dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const std::vector<HiddenRun>& runs);
void hidden_dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream,
                             const std::vector<HiddenRun>& runs);

class TransformerLayer {
 public:
  struct Saved {
    Norm::Saved ln1, ln2;
    SelfAttention::Saved attn;
    MLASelfAttention::Saved mla;
    MLP::Saved mlp;
    MoELayer::Saved moe;
    float dropout_p = 0.0f;
    uint64_t seed = 0, attn_drop_stream = 0, mlp_drop_stream = 0;
    std::vector<HiddenRun> drop_runs;
    Tensor mlp_in;  // --recompute-modules mlp (without layernorm): the dense MLP's input
  };
  // layer_number: the layer's global index (0-based), which names its parameters and keys its
  // dropout masks and recomputation. An MoE spec puts the experts' weights in expert_buf.
  TransformerLayer(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg,
                   const TransformerLayerSpec& spec, int layer_number, const ModelParallelConfig& par = {},
                   ParamAndGradBuffer* expert_buf = nullptr);
  void init(uint64_t seed) const;
  // ctx.batch/seq: the microbatch's token grid; rope: RoPE's tables when the spec has RoPE.
  Tensor forward(const Tensor& x, const ForwardContext& ctx, const RotaryTables* rope, Saved& saved) const;
  Tensor backward(const Tensor& dy, Saved& saved) const;
  // Generation (eval mode: no dropout, nothing saved): x [B, T, C], the step's new tokens; their
  // keys and values go into this layer's cache (see SelfAttention::forward_inference).
  Tensor forward_inference(const Tensor& x, const InferenceStep& step, const Tensor& k_cache,
                           const Tensor& v_cache) const;
  const MoELayer* moe() const { return moe_.get(); }  // null in a dense layer

 private:
  TransformerConfig cfg_;
  ModelParallelConfig par_;
  int layer_number_;
  Norm ln1_;
  std::unique_ptr<SelfAttention> attn_;     // the spec's attention: one of the two
  std::unique_ptr<MLASelfAttention> mla_;
  Norm ln2_;
  std::unique_ptr<MLP> mlp_;      // a dense layer's
  std::unique_ptr<MoELayer> moe_;  // an MoE layer's
  // Selective recomputation done at this level (the modules' own flags do the rest): the norms'
  // outputs (layernorm) and the dense MLP (mlp), rerun at the start of their branch's backward.
  bool recompute_norms_ = false, recompute_mlp_ = false;
};

}  // namespace mt
