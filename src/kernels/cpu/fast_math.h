#pragma once
// Vectorised exp and max for the CPU softmax loops (attention, cross-entropy). libm's expf is a
// call that GCC will not vectorise without -ffast-math, and under the default -ftrapping-math it
// will not if-convert the range checks either; so these use explicit 4-lane vectors (the
// GCC/Clang vector extension: SSE2 on x86-64, NEON on arm64). Results are a pure function of
// the inputs and of n (fixed lane and tail order), so they do not depend on threads.
//   exp: Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, Cephes' degree-6 polynomial for e^r,
//   and 2^k applied as two factors so that subnormal results come out right; within 2 ulp of
//   expf; exp(-inf) = 0, exp(x > 88.72) = inf, NaN stays NaN.
#include <cstdint>
#include <cstring>
#include <limits>

namespace mt::cpu {

using f32x4 = float __attribute__((vector_size(16)));
using i32x4 = int32_t __attribute__((vector_size(16)));

inline f32x4 splat(float v) { return f32x4{v, v, v, v}; }
inline f32x4 select(i32x4 mask, f32x4 a, f32x4 b) {  // mask lanes are all-ones or zero
  return f32x4(((i32x4)a & mask) | ((i32x4)b & ~mask));
}

inline f32x4 exp4(f32x4 x) {
  const f32x4 lo = splat(-104.0f), hi = splat(88.72f);  // e^-104 < the smallest subnormal
  f32x4 xc = select(x < lo, lo, x);
  xc = select(xc > hi, hi, xc);
  const f32x4 round = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const f32x4 k = (xc * splat(1.44269504088896341f) + round) - round;
  const f32x4 r = (xc - k * splat(0.693359375f)) - k * splat(-2.12194440e-4f);
  f32x4 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  const i32x4 ki = __builtin_convertvector(k, i32x4), k1 = ki >> 1;
  const f32x4 y = p * f32x4((k1 + 127) << 23) * f32x4((ki - k1 + 127) << 23);
  const f32x4 zero = splat(0.0f), inf = splat(std::numeric_limits<float>::infinity());
  return select(x < lo, zero, select(x > hi, inf, y));
}

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f32x4 v) { std::memcpy(p, &v, sizeof v); }
// The first n < 4 elements of p, the other lanes `fill`.
inline f32x4 load_partial(const float* p, int64_t n, float fill) {
  f32x4 v = splat(fill);
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}

// x[i] = exp(x[i] - shift) for i < n; returns the sum of the new x.
inline float exp_shifted_sum(float* x, int64_t n, float shift) {
  const f32x4 s = splat(shift);
  f32x4 acc = splat(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const f32x4 e = exp4(load4(x + i) - s);
    store4(x + i, e);
    acc += e;
  }
  if (i < n) {
    const f32x4 e = exp4(load_partial(x + i, n - i, -std::numeric_limits<float>::infinity()) - s);
    for (int64_t j = 0; j < n - i; ++j) x[i + j] = e[j];
    acc += e;  // padding lanes are exp(-inf) = 0
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// max(init, x[0..n)); NaNs are skipped.
inline float max_of(const float* x, int64_t n, float init) {
  f32x4 m = splat(init);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const f32x4 v = load4(x + i);
    m = select(v > m, v, m);
  }
  float r = init;
  for (int j = 0; j < 4; ++j) r = m[j] > r ? m[j] : r;
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

}  // namespace mt::cpu
