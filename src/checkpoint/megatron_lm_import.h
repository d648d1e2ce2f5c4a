#pragma once
// Megatron-LM / Megatron-Core checkpoints of GPT and Llama-style models, read without Python:
//
//   DIR/latest_checkpointed_iteration.txt      "100" (or "release")
//   DIR/iter_0000100/                          the `torch_dist` format (--ckpt-format torch_dist):
//       .metadata, __<rank>_<n>.distcp           torch.distributed.checkpoint (torch_dist_reader.h)
//       common.pt                                torch.save of the rest: args, iteration, ...
//       metadata.json                            {"sharded_backend": "torch_dist", ...}
//   DIR/iter_0000100/mp_rank_TT[_PPP]/model_optim_rng.pt
//                                              the legacy `torch` format: one torch.save per
//                                              tensor-parallel rank TT and pipeline stage PPP,
//                                              holding args, iteration and the rank's model
//                                              state dict ("model", or "model0".. with virtual
//                                              pipeline stages)
//
// The architecture comes from the saved args (argparse.Namespace: num_layers, hidden_size,
// swiglu, normalization, ...); the weights are reassembled from whatever tensor/pipeline layout
// they were saved in into whole tensors under our names and layouts (Megatron-Core's names;
// linear_qkv is already ordered by query group as ours; linear_fc1 [gate; up] of each
// tensor-parallel rank is regathered; Transformer Engine's layer norms fused into linear_qkv /
// linear_fc1 become input_layernorm / pre_mlp_layernorm). Vocabulary padding rows are kept: our
// vocabulary is Megatron's padded_vocab_size. Optimizer state is not read.
//
// Anything unexpected (a file that is not what the format says, a tensor this architecture does
// not have, a missing one, a shape other than the args imply, an architecture feature we do not
// model) is a UserError naming the file and what was expected.
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/tensor.h"
#include "model/transformer_config.h"

namespace mt {

// Whether DIR looks like a Megatron-LM checkpoint (a tracker file naming an iteration or release
// directory holding .metadata or mp_rank_* directories, or such an iteration directory itself).
bool is_megatron_lm_checkpoint(const std::string& dir);

class MegatronLmCheckpoint {
 public:
  explicit MegatronLmCheckpoint(const std::string& dir);
  ~MegatronLmCheckpoint();

  const std::string& path() const;         // the iteration directory
  const std::string& format() const;       // "torch_dist" or "torch"
  int64_t iteration() const;               // -1: a release checkpoint or none recorded
  const nlohmann::json& args() const;      // the saved arguments (those JSON can hold)
  const TransformerConfig& config() const; // the architecture; vocab_size = padded_vocab_size
  int tp() const;                          // the layout it was saved in (legacy: its files)
  int pp() const;

  // Our tensors (names, global shapes, stored dtype) in model order.
  const std::vector<SafetensorsSpec>& tensors() const;
  // One of them, whole, in our layout (host, the stored dtype).
  Tensor read(const std::string& name) const;
  // Checks every tensor's shape (from the metadata and pickles, reading no weights) and that every
  // tensor of the checkpoint's model is one of ours: UserError naming the first that is not
  // (another architecture than its args say).
  void check() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Megatron-LM's argparse.Namespace (args) as a TransformerConfig; UserError naming `where` and
// the argument for a feature we do not model (MoE, MLA, interleaved RoPE, layernorm-1p, ...).
TransformerConfig megatron_lm_args_to_config(const nlohmann::json& args, const std::string& where);

}  // namespace mt
