// Dispatch and argument checks for optimizer.h.
#include "kernels/optimizer.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor* param_out,
                const AdamWParams& p, Stream s) {
  using namespace detail;
  check_dtype("adamw_step", "master", master, DType::F32);
  check_dtype("adamw_step", "grad", grad, DType::F32);
  check_dtype("adamw_step", "m", m, DType::F32);
  check_dtype("adamw_step", "v", v, DType::F32);
  const int64_t n = master.numel();
  check_numel("adamw_step", "grad", grad, n);
  check_numel("adamw_step", "m", m, n);
  check_numel("adamw_step", "v", v, n);
  if (param_out) {
    check_float("adamw_step", "param_out", *param_out);
    check_numel("adamw_step", "param_out", *param_out, n);
  }
  MT_CHECK(p.step >= 1, "adamw_step: step {} must be >= 1", p.step);
  if (on_cuda("adamw_step", {&master, &grad, &m, &v, param_out}))
    MT_CUDA_CALL(adamw_step(master, grad, m, v, param_out, p, s));
  cpu::adamw_step(master, grad, m, v, param_out, p);
}

void adamw_step_ranges(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                       const Tensor* param_out, const std::vector<AdamWRange>& ranges, const AdamWParams& p,
                       Stream s) {
  using namespace detail;
  const char* op = "adamw_step_ranges";
  check_dtype(op, "master", master, DType::F32);
  check_dtype(op, "grad", grad, DType::F32);
  check_dtype(op, "m", m, DType::F32);
  check_dtype(op, "v", v, DType::F32);
  check_numel(op, "v", v, m.numel());
  if (param_out) {
    check_float(op, "param_out", *param_out);
    check_numel(op, "param_out", *param_out, grad.numel());
  }
  MT_CHECK(p.step >= 1, "{}: step {} must be >= 1", op, p.step);
  for (const AdamWRange& r : ranges)
    MT_CHECK(r.numel >= 0 && r.param >= 0 && r.master >= 0 && r.state >= 0 && r.param + r.numel <= grad.numel() &&
                 r.master + r.numel <= master.numel() && r.state + r.numel <= m.numel(),
             "{}: range (param {}, master {}, state {}, numel {}) outside grad {}, master {}, m {}", op, r.param,
             r.master, r.state, r.numel, grad.numel(), master.numel(), m.numel());
  if (on_cuda(op, {&master, &grad, &m, &v, param_out}))
    MT_CUDA_CALL(adamw_step_ranges(master, grad, m, v, param_out, ranges, p, s));
  AdamWParams q = p;
  for (const AdamWRange& r : ranges) {
    if (r.numel == 0) continue;
    q.weight_decay = r.decay ? p.weight_decay : 0.0f;
    const Shape sh{r.numel};
    Tensor out = param_out ? param_out->flat_slice(r.param, r.numel, sh) : Tensor();
    cpu::adamw_step(master.flat_slice(r.master, r.numel, sh), grad.flat_slice(r.param, r.numel, sh),
                    m.flat_slice(r.state, r.numel, sh), v.flat_slice(r.state, r.numel, sh),
                    param_out ? &out : nullptr, q);
  }
}

}  // namespace mt
