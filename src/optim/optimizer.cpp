#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/optimizer.h"

namespace mt {

AdamWParams adamw_step_params(const OptimizerConfig& cfg, double lr, int64_t step, double inv_scale,
                              double sum_squares, StepStats& st) {
  st.grad_norm = std::sqrt(sum_squares) * inv_scale;
  double coeff = 1.0;
  if (cfg.clip_grad > 0.0) {
    double c = cfg.clip_grad / (st.grad_norm + 1e-6);
    if (c < 1.0) coeff = c;
  }
  AdamWParams ap;
  ap.lr = float(lr);
  ap.beta1 = float(cfg.beta1);
  ap.beta2 = float(cfg.beta2);
  ap.eps = float(cfg.eps);
  ap.step = step;
  ap.grad_scale = float(inv_scale * coeff);
  return ap;
}

double local_grad_sum_squares(const ParamAndGradBuffer& buf, int64_t lo, int64_t hi, const GradNormGroups& g) {
  const Tensor& grads = buf.main_grads();
  bool duplicates = false;
  for (const auto& info : buf.infos()) duplicates = duplicates || info.pipeline_duplicate;
  // tp rank 0 counts everything it holds: one pass over the range (padding is zero).
  if (g.tp_rank == 0 && !duplicates) return hi > lo ? sum_squares(grads.flat_slice(lo, hi - lo, {hi - lo})) : 0.0;
  double sq = 0;
  for (const auto& info : buf.infos()) {
    if (!info.tensor_parallel() && g.tp_rank != 0) continue;  // a replica: counted on tp rank 0
    if (info.pipeline_duplicate) continue;                     // counted on the stage that owns it
    const int64_t a = std::max(lo, info.offset), b = std::min(hi, info.offset + info.numel);
    if (a < b) sq += sum_squares(grads.flat_slice(a, b - a, {b - a}));
  }
  return sq;
}

int64_t local_grad_count_zeros(const ParamAndGradBuffer& buf, int64_t lo, int64_t hi, const GradNormGroups& g) {
  const Tensor& grads = buf.main_grads();
  int64_t zeros = 0;
  for (const auto& info : buf.infos()) {  // per parameter: the buckets' padding is not a gradient
    if (!info.tensor_parallel() && g.tp_rank != 0) continue;
    if (info.pipeline_duplicate) continue;
    const int64_t a = std::max(lo, info.offset), b = std::min(hi, info.offset + info.numel);
    if (a < b) zeros += count_zeros(grads.flat_slice(a, b - a, {b - a}));
  }
  return zeros;
}

bool is_embedding_or_output_parameter(const std::string& name) {
  return name == "embedding.word_embeddings.weight" || name == "output_layer.weight";
}

void adamw_step_ranges_decoupled(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                                 const Tensor* param_out, const std::vector<AdamWRange>& ranges,
                                 const std::vector<bool>& decoupled, const AdamWParams& p, double decoupled_lr) {
  if (decoupled_lr < 0) {
    if (!ranges.empty()) adamw_step_ranges(master, grad, m, v, param_out, ranges, p);
    return;
  }
  std::vector<AdamWRange> rest, own;
  for (size_t i = 0; i < ranges.size(); ++i) (decoupled[i] ? own : rest).push_back(ranges[i]);
  if (!rest.empty()) adamw_step_ranges(master, grad, m, v, param_out, rest, p);
  AdamWParams q = p;
  q.lr = float(decoupled_lr);
  if (!own.empty()) adamw_step_ranges(master, grad, m, v, param_out, own, q);
}

int64_t AdamWOptimizer::count_zeros_in_grads() {
  Communicator* mp = groups_.model_parallel && groups_.model_parallel->size() > 1 ? groups_.model_parallel : nullptr;
  const double n = double(local_grad_count_zeros(buf_, 0, buf_.numel(), groups_));
  return int64_t(mp ? mp->all_reduce_scalar(n) : n);
}

AdamWOptimizer::AdamWOptimizer(ParamAndGradBuffer& buf, const OptimizerConfig& cfg, const GradNormGroups& groups)
    : buf_(buf), cfg_(cfg), groups_(groups) {
  const Tensor& p = buf.params();
  has_master_copy_ = p.dtype() != DType::F32;
  if (has_master_copy_) {
    master_ = Tensor::empty(p.shape(), DType::F32, p.device());
    cast(p, master_);
  } else {
    master_ = p;
  }
  m_ = Tensor::zeros(p.shape(), DType::F32, p.device());
  v_ = Tensor::zeros(p.shape(), DType::F32, p.device());
}

GradStats AdamWOptimizer::grad_stats(double loss_scale) {
  GradStats gs;
  const Tensor& g = buf_.main_grads();
  Communicator* mp = groups_.model_parallel && groups_.model_parallel->size() > 1 ? groups_.model_parallel : nullptr;
  if (loss_scale != 1.0) {
    double bad = g.numel() == 0 || all_finite(g) ? 0.0 : 1.0;
    if (mp) bad = mp->all_reduce_scalar(bad, ReduceOp::Max);
    if (bad != 0.0) {
      gs.finite = false;
      return gs;
    }
  }
  // One rank with the whole model: the norm of the whole flat buffer (padding is zero).
  gs.sum_squares = mp ? mp->all_reduce_scalar(local_grad_sum_squares(buf_, 0, buf_.numel(), groups_))
                      : g.numel() == 0 ? 0.0 : sum_squares(g);
  gs.finite = std::isfinite(gs.sum_squares);
  return gs;
}

StepStats AdamWOptimizer::apply(double lr, double loss_scale, const GradStats& global) {
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
  ranges.reserve(buf_.infos().size());
  for (const auto& info : buf_.infos()) {
    ranges.push_back({info.offset, info.offset, info.offset, info.numel, !info.no_weight_decay});
    decoupled.push_back(is_embedding_or_output_parameter(info.name));
  }
  adamw_step_ranges_decoupled(master_, g, m_, v_, has_master_copy_ ? &buf_.params() : nullptr, ranges, decoupled, ap,
                              decoupled_lr_);
  return st;
}

}  // namespace mt

namespace mt {

int64_t AdamWOptimizer::state_bytes() const {
  return int64_t(m_.nbytes() + v_.nbytes() + (has_master_copy_ ? master_.nbytes() : 0));
}

}  // namespace mt

namespace mt {

std::vector<OptimizerStateRange> AdamWOptimizer::state_ranges() const {
  OptimizerStateRange r;
  r.offset = 0;
  r.numel = m_.numel();
  if (has_master_copy_) r.master = master_;
  r.exp_avg = m_;
  r.exp_avg_sq = v_;
  r.dp_replica = dp_replica_;
  return {r};
}

void AdamWOptimizer::reset_master_from_params() {
  if (has_master_copy_) cast(buf_.params(), master_);
}

}  // namespace mt
