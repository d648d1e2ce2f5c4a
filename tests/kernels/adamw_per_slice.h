#pragma once
// The reference for adamw_step_ranges: one adamw_step per range on slices of the flat buffers,
// with the range's weight decay (p.weight_decay where r.decay, else 0). Any device.
#include <vector>

#include "kernels/optimizer.h"

namespace mt::testing {

inline void adamw_step_per_slice(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                                 const Tensor& param_out, const std::vector<AdamWRange>& ranges,
                                 const AdamWParams& p) {
  for (const AdamWRange& r : ranges) {
    AdamWParams q = p;
    q.weight_decay = r.decay ? p.weight_decay : 0.0f;
    const Shape sh{r.numel};
    Tensor out = param_out.flat_slice(r.param, r.numel, sh);
    adamw_step(master.flat_slice(r.master, r.numel, sh), grad.flat_slice(r.param, r.numel, sh),
               m.flat_slice(r.state, r.numel, sh), v.flat_slice(r.state, r.numel, sh), &out, q);
  }
}

}  // namespace mt::testing
