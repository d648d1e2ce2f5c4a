// Rotary position embedding on the query and key heads of qkv [B, T, G, S, D], S = Q/G + 2
// (slots 0 .. S-3 the group's query heads, S-2 its key head, S-1 its value head, left alone):
//   i < R/2:  y[i]       = x[i] c - x[i + R/2] s
//             y[i + R/2] = x[i + R/2] c + x[i] s,     c = cos[t, i], s = sin[t, i]
// Backward rotates by -angle (s -> -s): the rotation is orthogonal, so its inverse is its
// transpose. In place; fp32 math and one rounding per element. Reads and writes the first R
// channels of every query and key head once, plus the [T, R/2] tables (cache-resident).
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

// Heads are independent, so the parallel loop over them gives the same bits for any thread count.
template <class T>
void rope_t(T* qkv, const float* cos, const float* sin, int64_t B, int64_t T_len, int64_t G, int64_t S, int64_t D,
            int64_t R, float sign) {
  const int64_t half = R / 2, heads = B * T_len * G * S;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < heads; ++h) {
    if (h % S == S - 1) continue;  // value head
    const int64_t t = (h / (G * S)) % T_len;
    const float* c = cos + t * half;
    const float* sn = sin + t * half;
    T* x = qkv + h * D;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = to_f32(x[i]), x2 = to_f32(x[i + half]), s = sign * sn[i];
      x[i] = from_f32<T>(x1 * c[i] - x2 * s);
      x[i + half] = from_f32<T>(x2 * c[i] + x1 * s);
    }
  }
}

void rope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int rot_dim, float sign) {
  dispatch_float(qkv.dtype(), [&](auto tag) {
    using T = decltype(tag);
    rope_t(qkv.data<T>(), cos.data<float>(), sin.data<float>(), qkv.size(0), qkv.size(1), qkv.size(2), qkv.size(3),
           qkv.size(4), rot_dim, sign);
  });
}

}  // namespace

void rope_forward(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int /*n_query_groups*/, int rot_dim) {
  rope(qkv, cos, sin, rot_dim, 1.0f);
}

void rope_backward(const Tensor& dqkv, const Tensor& cos, const Tensor& sin, int /*n_query_groups*/, int rot_dim) {
  rope(dqkv, cos, sin, rot_dim, -1.0f);
}

}  // namespace mt::cpu
