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

}  // namespace mt
