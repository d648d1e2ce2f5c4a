// Fused AdamW over a flat fp32 range (PyTorch's arithmetic, decoupled weight decay):
//   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   master *= 1 - lr wd;  master -= (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)
// Grid-stride, four fp32 elements per thread per iteration (float4) when aligned. Bytes per
// element: 16 read (master, grad, m, v) + 12 written (+2 for a half param copy): memory-bound,
// ~1.9 TB/s-class on H100 means ~14 ms per billion parameters.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr int kBlock = 256;

struct AdamWScalars {
  float b1, b2, eps, grad_scale, step_size, decay, bc2;
};

template <class P>
__device__ __forceinline__ void adamw_one(float& w, float g_raw, float& m, float& v, P* param_out, int64_t i,
                                          const AdamWScalars& a) {
  const float g = g_raw * a.grad_scale;
  const float mi = a.b1 * m + (1.0f - a.b1) * g;
  const float vi = a.b2 * v + (1.0f - a.b2) * g * g;
  float wi = w * a.decay;
  wi -= a.step_size * (mi / (sqrtf(vi / a.bc2) + a.eps));
  m = mi;
  v = vi;
  w = wi;
  if (param_out) param_out[i] = from_float<P>(wi);
}

template <class P, bool VEC>
__global__ void adamw_kernel(float* master, const float* grad, float* m, float* v, P* param_out, int64_t n,
                             AdamWScalars a) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if constexpr (VEC) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n / 4; i += stride) {
      float4 w4 = reinterpret_cast<float4*>(master)[i];
      const float4 g4 = reinterpret_cast<const float4*>(grad)[i];
      float4 m4 = reinterpret_cast<float4*>(m)[i];
      float4 v4 = reinterpret_cast<float4*>(v)[i];
      adamw_one(w4.x, g4.x, m4.x, v4.x, param_out, 4 * i + 0, a);
      adamw_one(w4.y, g4.y, m4.y, v4.y, param_out, 4 * i + 1, a);
      adamw_one(w4.z, g4.z, m4.z, v4.z, param_out, 4 * i + 2, a);
      adamw_one(w4.w, g4.w, m4.w, v4.w, param_out, 4 * i + 3, a);
      reinterpret_cast<float4*>(master)[i] = w4;
      reinterpret_cast<float4*>(m)[i] = m4;
      reinterpret_cast<float4*>(v)[i] = v4;
    }
  } else {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
      adamw_one(master[i], grad[i], m[i], v[i], param_out, i, a);
  }
}

}  // namespace

void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor* param_out,
                const AdamWParams& p, Stream s) {
  const int64_t n = master.numel();
  if (n == 0) return;
  CudaDeviceGuard guard(master.device().index);
  AdamWScalars a;
  a.b1 = p.beta1;
  a.b2 = p.beta2;
  a.eps = p.eps;
  a.grad_scale = p.grad_scale;
  const float bc1 = float(1.0 - std::pow(double(p.beta1), double(p.step)));
  a.bc2 = float(1.0 - std::pow(double(p.beta2), double(p.step)));
  a.step_size = p.lr / bc1;
  a.decay = 1.0f - p.lr * p.weight_decay;
  const bool vec = n % 4 == 0 && aligned16(master.raw()) && aligned16(grad.raw()) && aligned16(m.raw()) &&
                   aligned16(v.raw());
  dispatch_float(param_out ? param_out->dtype() : DType::F32, [&](auto tag) {
    using P = typename decltype(tag)::type;
    P* out = param_out ? static_cast<P*>(param_out->raw()) : nullptr;
    float *pw = master.data<float>(), *pm = m.data<float>(), *pv = v.data<float>();
    const float* pg = grad.data<float>();
    if (vec)
      adamw_kernel<P, true><<<grid_size(n / 4, kBlock), kBlock, 0, stream_of(s)>>>(pw, pg, pm, pv, out, n, a);
    else
      adamw_kernel<P, false><<<grid_size(n, kBlock), kBlock, 0, stream_of(s)>>>(pw, pg, pm, pv, out, n, a);
  });
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda
