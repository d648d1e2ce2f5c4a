// Fused AdamW on the CPU, elementwise over a flat fp32 range (arithmetic as in optimizer.h):
//   g = grad * grad_scale;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   master *= 1 - lr wd;  master -= (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)
// Reads master, grad, m, v and writes master, m, v (and the half param copy) once each.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

template <class P>
void adamw_t(float* master, const float* grad, float* m, float* v, P* param_out, int64_t n, const AdamWParams& p) {
  const float b1 = p.beta1, b2 = p.beta2;
  const float bc1 = float(1.0 - std::pow(double(b1), double(p.step)));
  const float bc2 = float(1.0 - std::pow(double(b2), double(p.step)));
  const float step_size = p.lr / bc1, decay = 1.0f - p.lr * p.weight_decay;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * p.grad_scale;
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    float w = master[i] * decay;
    w -= step_size * (mi / (std::sqrt(vi / bc2) + p.eps));
    m[i] = mi;
    v[i] = vi;
    master[i] = w;
    if (param_out) param_out[i] = from_f32<P>(w);
  }
}

}  // namespace

void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor* param_out,
                const AdamWParams& p) {
  dispatch_float(param_out ? param_out->dtype() : DType::F32, [&](auto tag) {
    using P = decltype(tag);
    adamw_t(master.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
            param_out ? param_out->data<P>() : nullptr, master.numel(), p);
  });
}

}  // namespace mt::cpu
