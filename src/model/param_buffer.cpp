#include "model/param_buffer.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/elementwise.h"

namespace mt {

ParamAndGradBuffer::Id ParamAndGradBuffer::add(const std::string& name, const Shape& shape, bool no_wd) {
  MT_CHECK(!allocated(), "parameter {} registered after allocation", name);
  MT_CHECK(!by_name_.count(name), "parameter {} registered twice", name);
  ParamInfo p{name, shape, total_, shape_numel(shape), no_wd, shape};
  // Keep every parameter 64-byte aligned in the widest dtype (16 fp32 elements).
  total_ += (p.numel + 15) / 16 * 16;
  infos_.push_back(p);
  Id id = Id(infos_.size() - 1);
  by_name_[name] = id;
  return id;
}

ParamAndGradBuffer::Id ParamAndGradBuffer::add_shard(const std::string& name, const Shape& shape,
                                                     const Shape& global_shape, int shard_dim, int64_t shard_start,
                                                     bool no_wd) {
  MT_CHECK(shard_dim >= 0 && shard_dim < int(shape.size()) && shape.size() == global_shape.size() &&
               shard_start >= 0 && shard_start + shape[size_t(shard_dim)] <= global_shape[size_t(shard_dim)],
           "parameter {}: shard {} at {} along {} of {}", name, shape_str(shape), shard_start, shard_dim,
           shape_str(global_shape));
  Id id = add(name, shape, no_wd);
  ParamInfo& p = infos_[size_t(id)];
  p.global_shape = global_shape;
  if (shape != global_shape) {
    p.shard_dim = shard_dim;
    p.shard_start = shard_start;
  }
  return id;
}

void ParamAndGradBuffer::set_bucketing(int64_t bucket_size, int64_t pad_multiple) {
  MT_CHECK(!allocated(), "bucketing set after allocation");
  MT_CHECK(pad_multiple > 0 && pad_multiple % 16 == 0, "bucket padding {} must be a multiple of 16", pad_multiple);
  bucket_size_ = bucket_size;
  pad_multiple_ = pad_multiple;
}

void ParamAndGradBuffer::allocate(DType param_dtype, Device device) {
  MT_CHECK(!allocated(), "buffer allocated twice");
  // Group parameters into buckets from the last registered, then lay the buckets out so that
  // parameters keep registration order in memory (the bucket of parameter 0 comes first).
  std::vector<std::vector<Id>> groups;
  std::vector<Id> cur;
  int64_t cur_n = 0;
  for (Id id = Id(infos_.size()) - 1; id >= 0; --id) {
    cur.push_back(id);
    cur_n += (infos_[size_t(id)].numel + 15) / 16 * 16;
    if (bucket_size_ > 0 && cur_n >= bucket_size_) {
      groups.push_back(std::move(cur));
      cur.clear();
      cur_n = 0;
    }
  }
  if (!cur.empty() || groups.empty()) groups.push_back(std::move(cur));
  buckets_.assign(groups.size(), GradBucket{});
  int64_t off = 0;
  for (size_t g = groups.size(); g-- > 0;) {
    GradBucket& b = buckets_[g];
    b.offset = off;
    for (auto it = groups[g].rbegin(); it != groups[g].rend(); ++it) {
      infos_[size_t(*it)].offset = off;
      off += (infos_[size_t(*it)].numel + 15) / 16 * 16;
      b.params.push_back(*it);
    }
    b.numel = (off - b.offset + pad_multiple_ - 1) / pad_multiple_ * pad_multiple_;
    off = b.offset + b.numel;
  }
  total_ = off;
  params_ = Tensor::zeros({total_}, param_dtype, device);
  grads_ = Tensor::zeros({total_}, DType::F32, device);
  // What begin_grad_accumulation zeroes: everything outside the marked parameters.
  overwrites_first_.resize(infos_.size(), 0);
  unwritten_.assign(infos_.size(), 0);
  std::vector<std::pair<int64_t, int64_t>> marked;
  for (size_t id = 0; id < infos_.size(); ++id)
    if (overwrites_first_[id]) marked.push_back({infos_[id].offset, infos_[id].numel});
  std::sort(marked.begin(), marked.end());
  std::vector<int64_t> ranges;
  int64_t at = 0;
  for (const auto& [o, n] : marked) {
    if (o > at) ranges.insert(ranges.end(), {at, o - at});
    at = o + n;
  }
  if (at < total_) ranges.insert(ranges.end(), {at, total_ - at});
  Tensor r = Tensor::empty({int64_t(ranges.size() / 2), 2}, DType::I64);
  std::copy(ranges.begin(), ranges.end(), r.data<int64_t>());
  eager_ranges_ = r.to(device);
}

void ParamAndGradBuffer::set_overwrites_first_grad(Id id) {
  MT_CHECK(!allocated(), "parameter {} marked after allocation", infos_[size_t(id)].name);
  overwrites_first_.resize(infos_.size(), 0);
  overwrites_first_[size_t(id)] = 1;
}

void ParamAndGradBuffer::begin_grad_accumulation() const {
  MT_CHECK(allocated(), "begin_grad_accumulation before allocate");
  zero_ranges(grads_, eager_ranges_);
  unwritten_ = overwrites_first_;
}

float ParamAndGradBuffer::grad_beta(Id id) const {
  if (!unwritten_[size_t(id)]) return 1.0f;
  unwritten_[size_t(id)] = 0;
  return 0.0f;
}

void ParamAndGradBuffer::zero_unwritten_grads(Id first, Id end) const {
  for (Id id = first; id < end; ++id)
    if (unwritten_[size_t(id)]) {
      grad(id).zero_();
      unwritten_[size_t(id)] = 0;
    }
}

void ParamAndGradBuffer::zero_grads() const {
  grads_.zero_();
  std::fill(unwritten_.begin(), unwritten_.end(), 0);
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
