#pragma once
// MLP: linear_fc1 (h -> ffn, column-parallel) -> activation -> linear_fc2 (ffn -> h, row-parallel).
// Dense (GPT-2): GeLU, fused into fc1's forward GEMM and fc2's backward GEMM.
// Gated (Llama's SwiGLU): fc1 computes [gate | up] (2 ffn features, each half split over TP), and
// silu(gate) * up feeds fc2.
#include <string>

#include "model/tensor_parallel.h"
#include "model/transformer_config.h"
#include "model/transformer_layer_spec.h"

namespace mt {

class MLP {
 public:
  struct Saved {
    ColumnParallelLinear::Saved fc1_in;
    RowParallelLinear::Saved fc2_in;  // act(pre); empty when recomputing (recomputed in backward)
    Tensor pre_act;  // fc1's output, the activation's input
  };
  // recompute_activation: keep only fc1's output and recompute the activation in backward (the
  // layer's share of --recompute-gelu, see TransformerConfig::layer_recomputes_gelu).
  MLP(ParamAndGradBuffer& buf, const std::string& prefix, const TransformerConfig& cfg, MlpKind kind,
      const ModelParallelConfig& par = {}, bool recompute_activation = false);
  void init(float std, float out_std, uint64_t seed) const;
  Tensor forward(const Tensor& x, Saved& saved) const;   // [B, T, C] -> [B, T, C]
  Tensor backward(const Tensor& dy, Saved& saved) const;
  // Selective recomputation of the layernorm before it (see SelfAttention::drop_input).
  void drop_input(Saved& saved) const { saved.fc1_in = {}; }
  void restore_input(const Tensor& x, Saved& saved) const { fc1_.restore_input(x, saved.fc1_in); }

 private:
  MlpKind kind_;
  bool recompute_ = false;
  ColumnParallelLinear fc1_;
  RowParallelLinear fc2_;
};

}  // namespace mt
