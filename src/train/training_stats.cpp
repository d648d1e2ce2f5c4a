#include "train/training_stats.h"

#include <cmath>

#include "kernels/elementwise.h"

namespace mt {
namespace {

double local_param_sum_squares(const ParamAndGradBuffer& buf, int tp_rank) {
  const Tensor& p = buf.params();
  double sq = 0;
  for (const auto& info : buf.infos()) {
    if (!info.tensor_parallel() && tp_rank != 0) continue;  // a replica: counted on tp rank 0
    if (info.pipeline_duplicate || info.numel == 0) continue;  // counted on the stage that owns it
    sq += sum_squares(p.flat_slice(info.offset, info.numel, {info.numel}));
  }
  return sq;
}

}  // namespace

double params_norm(const ParamAndGradBuffer& dense, const ParamAndGradBuffer* experts, ProcessGroups& groups) {
  const int tp_rank = groups.coords().tp;
  double sq = local_param_sum_squares(dense, tp_rank);
  if (groups.mp().size() > 1) sq = groups.mp().all_reduce_scalar(sq);
  if (experts) {
    double e = local_param_sum_squares(*experts, tp_rank);
    if (groups.expert_mp().size() > 1) e = groups.expert_mp().all_reduce_scalar(e);
    sq += e;
  }
  return std::sqrt(sq);
}

}  // namespace mt
