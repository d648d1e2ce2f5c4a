#pragma once
// ParamAndGradBuffer (Megatron-Core's name): all parameters of a model chunk in one contiguous
// buffer of the model dtype, and their gradients in one contiguous fp32 "main grad" buffer of
// the same layout. Layers hold named views into both. Data-parallel reduction, the optimizer,
// grad clipping and checkpoint sharding work on the flat buffers and the name table.
//
// Registration order is layout order. Later (data parallelism) the grad buffer is cut into
// buckets in reverse registration order, the order in which backward finishes grads.
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct ParamInfo {
  std::string name;  // global name, e.g. "decoder.layers.0.mlp.linear_fc1.weight"
  Shape shape;       // local shape (this rank's shard)
  int64_t offset = 0;  // element offset in the flat buffers
  int64_t numel = 0;
  bool no_weight_decay = false;  // biases and norm weights
};

class ParamAndGradBuffer {
 public:
  using Id = int;

  // Registers a parameter; must precede allocate().
  Id add(const std::string& name, const Shape& shape, bool no_weight_decay);
  // Allocates the parameter buffer (param_dtype) and the fp32 main-grad buffer (zeroed).
  void allocate(DType param_dtype, Device device);

  bool allocated() const { return params_.defined(); }
  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(Id id) const { return infos_[id]; }
  Id find(const std::string& name) const;  // -1 when absent
  int64_t numel() const { return total_; }

  Tensor param(Id id) const;
  Tensor grad(Id id) const;
  const Tensor& params() const { return params_; }      // flat, model dtype
  const Tensor& main_grads() const { return grads_; }   // flat, fp32
  void zero_grads() const { grads_.zero_(); }

 private:
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, Id> by_name_;
  int64_t total_ = 0;
  Tensor params_, grads_;
};

}  // namespace mt
