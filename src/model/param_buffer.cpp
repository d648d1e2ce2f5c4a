#include "model/param_buffer.h"

#include "core/error.h"

namespace mt {

ParamAndGradBuffer::Id ParamAndGradBuffer::add(const std::string& name, const Shape& shape, bool no_wd) {
  MT_CHECK(!allocated(), "parameter {} registered after allocation", name);
  MT_CHECK(!by_name_.count(name), "parameter {} registered twice", name);
  ParamInfo p{name, shape, total_, shape_numel(shape), no_wd};
  // Keep every parameter 64-byte aligned in the widest dtype (16 fp32 elements).
  total_ += (p.numel + 15) / 16 * 16;
  infos_.push_back(p);
  Id id = Id(infos_.size() - 1);
  by_name_[name] = id;
  return id;
}

void ParamAndGradBuffer::allocate(DType param_dtype, Device device) {
  MT_CHECK(!allocated(), "buffer allocated twice");
  params_ = Tensor::zeros({total_}, param_dtype, device);
  grads_ = Tensor::zeros({total_}, DType::F32, device);
}

ParamAndGradBuffer::Id ParamAndGradBuffer::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

Tensor ParamAndGradBuffer::param(Id id) const {
  const auto& p = infos_[id];
  return params_.flat_slice(p.offset, p.numel, p.shape);
}

Tensor ParamAndGradBuffer::grad(Id id) const {
  const auto& p = infos_[id];
  return grads_.flat_slice(p.offset, p.numel, p.shape);
}

}  // namespace mt
