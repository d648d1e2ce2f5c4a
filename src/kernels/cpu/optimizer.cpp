// Fused AdamW on the CPU, elementwise over a flat fp32 range (arithmetic as in optimizer.h):
//   g = grad * grad_scale;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   master *= 1 - lr wd;  master -= (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)
// Reads master, grad, m, v and writes master, m, v (and the half param copy) once each.
//
// Eight elements at a time with AVX2: the scalar loop did not vectorise (std::sqrt keeps its
// errno branch) and was compute-bound at ~4x the memory time. A short tail goes through the same
// vector code with masked loads and stores, so every element gets the same arithmetic wherever
// it sits (the distributed optimizer updates shards that start anywhere).
#include <cmath>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

struct AdamWConsts {
  float b1, b2, bc2, step_size, decay, eps, grad_scale;
  explicit AdamWConsts(const AdamWParams& p)
      : b1(p.beta1),
        b2(p.beta2),
        bc2(float(1.0 - std::pow(double(p.beta2), double(p.step)))),
        step_size(p.lr / float(1.0 - std::pow(double(p.beta1), double(p.step)))),
        decay(1.0f - p.lr * p.weight_decay),
        eps(p.eps),
        grad_scale(p.grad_scale) {}
};

#if defined(__AVX2__)
template <class P>
void adamw_t(float* master, const float* grad, float* m, float* v, P* param_out, int64_t n, const AdamWConsts& c) {
  const __m256 b1 = _mm256_set1_ps(c.b1), b2 = _mm256_set1_ps(c.b2), one_b1 = _mm256_set1_ps(1.0f - c.b1),
               one_b2 = _mm256_set1_ps(1.0f - c.b2), bc2 = _mm256_set1_ps(c.bc2), step = _mm256_set1_ps(c.step_size),
               decay = _mm256_set1_ps(c.decay), eps = _mm256_set1_ps(c.eps), scale = _mm256_set1_ps(c.grad_scale);
  const int64_t blocks = (n + 7) / 8;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i = blk * 8, len = n - i < 8 ? n - i : 8;
    // Lanes < len: all ones (masked loads read, masked stores write only those).
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(len)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 g = _mm256_mul_ps(_mm256_maskload_ps(grad + i, mask), scale);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_maskload_ps(m + i, mask)), _mm256_mul_ps(one_b1, g));
    const __m256 vi =
        _mm256_add_ps(_mm256_mul_ps(b2, _mm256_maskload_ps(v + i, mask)), _mm256_mul_ps(_mm256_mul_ps(one_b2, g), g));
    const __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_div_ps(vi, bc2)), eps);
    const __m256 w = _mm256_sub_ps(_mm256_mul_ps(_mm256_maskload_ps(master + i, mask), decay),
                                   _mm256_mul_ps(step, _mm256_div_ps(mi, denom)));
    _mm256_maskstore_ps(m + i, mask, mi);
    _mm256_maskstore_ps(v + i, mask, vi);
    _mm256_maskstore_ps(master + i, mask, w);
    if (param_out) {
      alignas(32) float wv[8];
      _mm256_store_ps(wv, w);
      for (int64_t j = 0; j < len; ++j) param_out[i + j] = from_f32<P>(wv[j]);
    }
  }
}
#else
template <class P>
void adamw_t(float* master, const float* grad, float* m, float* v, P* param_out, int64_t n, const AdamWConsts& c) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * c.grad_scale;
    const float mi = c.b1 * m[i] + (1.0f - c.b1) * g;
    const float vi = c.b2 * v[i] + (1.0f - c.b2) * g * g;
    const float w = master[i] * c.decay - c.step_size * (mi / (std::sqrt(vi / c.bc2) + c.eps));
    m[i] = mi;
    v[i] = vi;
    master[i] = w;
    if (param_out) param_out[i] = from_f32<P>(w);
  }
}
#endif

}  // namespace

void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor* param_out,
                const AdamWParams& p) {
  const AdamWConsts c(p);
  dispatch_float(param_out ? param_out->dtype() : DType::F32, [&](auto tag) {
    using P = decltype(tag);
    adamw_t(master.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
            param_out ? param_out->data<P>() : nullptr, master.numel(), c);
  });
}

}  // namespace mt::cpu
