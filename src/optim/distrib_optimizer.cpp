#include "optim/distrib_optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"

namespace mt {

DistributedOptimizer::DistributedOptimizer(ParamAndGradBuffer& buf, DistributedDataParallel& ddp,
                                           const OptimizerConfig& cfg, const GradNormGroups& groups)
    : buf_(buf), ddp_(ddp), cfg_(cfg), groups_(groups) {
  int64_t state = 0;
  for (size_t b = 0; b < buf.buckets().size(); ++b) {
    const int64_t lo = ddp.shard_offset(b), hi = lo + ddp.shard_numel(b);
    shards_.emplace_back(lo, hi - lo);
    for (int id : buf.buckets()[b].params) {
      const ParamInfo& p = buf.info(id);
      const int64_t a = std::max(lo, p.offset), e = std::min(hi, p.offset + p.numel);
      if (a < e) {
        pieces_.push_back({id, a, e - a, state});
        state += e - a;
      }
    }
  }
  const Tensor& params = buf.params();
  has_master_copy_ = params.dtype() != DType::F32;
  m_ = Tensor::zeros({state}, DType::F32, params.device());
  v_ = Tensor::zeros({state}, DType::F32, params.device());
  if (has_master_copy_) {
    master_ = Tensor::empty({state}, DType::F32, params.device());
    for (const Piece& pc : pieces_)
      cast(params.flat_slice(pc.offset, pc.numel, {pc.numel}), master_.flat_slice(pc.state, pc.numel, {pc.numel}));
  }
}

int64_t DistributedOptimizer::state_bytes() const {
  return int64_t(m_.nbytes() + v_.nbytes() + (has_master_copy_ ? master_.nbytes() : 0));
}

GradStats DistributedOptimizer::grad_stats(double loss_scale) {
  GradStats gs;
  const Tensor& g = buf_.main_grads();
  Communicator& dp = ddp_.dp();
  Communicator* mp = groups_.model_parallel;
  auto reduce_all = [&](double v, ReduceOp op) {
    v = dp.all_reduce_scalar(v, op);
    return mp ? mp->all_reduce_scalar(v, op) : v;
  };
  if (loss_scale != 1.0) {
    bool ok = true;
    for (const auto& [lo, n] : shards_) ok = ok && (n == 0 || all_finite(g.flat_slice(lo, n, {n})));
    if (reduce_all(ok ? 0.0 : 1.0, ReduceOp::Max) != 0.0) {
      gs.finite = false;
      return gs;
    }
  }
  double sq = 0;
  for (const auto& [lo, n] : shards_) sq += local_grad_sum_squares(buf_, lo, lo + n, groups_);
  gs.sum_squares = reduce_all(sq, ReduceOp::Sum);
  gs.finite = std::isfinite(gs.sum_squares);
  return gs;
}

int64_t DistributedOptimizer::count_zeros_in_grads() {
  double n = 0;
  for (const auto& [lo, len] : shards_) n += double(local_grad_count_zeros(buf_, lo, lo + len, groups_));
  n = ddp_.dp().all_reduce_scalar(n);
  return int64_t(groups_.model_parallel ? groups_.model_parallel->all_reduce_scalar(n) : n);
}

StepStats DistributedOptimizer::apply(double lr, double loss_scale, const GradStats& global) {
  StepStats st;
  const Tensor& g = buf_.main_grads();
  if (!global.finite) {
    st.skipped = true;
    return st;
  }
  AdamWParams ap = adamw_step_params(cfg_, lr, ++step_, 1.0 / loss_scale, global.sum_squares, st);
  ap.weight_decay = float(cfg_.weight_decay);
  std::vector<AdamWRange> ranges;
  std::vector<bool> decoupled;
  ranges.reserve(pieces_.size());
  for (const Piece& pc : pieces_) {  // fp32 params are their own master: the master offset is the param's
    ranges.push_back({pc.offset, has_master_copy_ ? pc.state : pc.offset, pc.state, pc.numel,
                      !buf_.info(pc.param).no_weight_decay});
    decoupled.push_back(is_embedding_or_output_parameter(buf_.info(pc.param).name));
  }
  adamw_step_ranges_decoupled(has_master_copy_ ? master_ : buf_.params(), g, m_, v_,
                              has_master_copy_ ? &buf_.params() : nullptr, ranges, decoupled, ap, decoupled_lr_);
  ddp_.all_gather_params();
  return st;
}

}  // namespace mt

namespace mt {

std::vector<OptimizerStateRange> DistributedOptimizer::state_ranges() const {
  std::vector<OptimizerStateRange> out;
  for (const Piece& pc : pieces_) {
    OptimizerStateRange r;
    r.offset = pc.offset;
    r.numel = pc.numel;
    const Shape s{pc.numel};
    if (has_master_copy_) r.master = master_.flat_slice(pc.state, pc.numel, s);
    r.exp_avg = m_.flat_slice(pc.state, pc.numel, s);
    r.exp_avg_sq = v_.flat_slice(pc.state, pc.numel, s);
    r.dp_replica = 0;  // each element's state lives on exactly one data-parallel rank
    out.push_back(std::move(r));
  }
  return out;
}

void DistributedOptimizer::reset_master_from_params() {
  if (!has_master_copy_) return;
  const Tensor& params = buf_.params();
  for (const Piece& pc : pieces_)
    cast(params.flat_slice(pc.offset, pc.numel, {pc.numel}), master_.flat_slice(pc.state, pc.numel, {pc.numel}));
}

}  // namespace mt
