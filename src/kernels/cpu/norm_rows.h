#pragma once
// What the CPU norms (LayerNorm, RMSNorm) share per row: the fused residual add, and the row
// reduction sum_{c < C} f(c) in kLaneSumLanes partial sums added in a fixed tree (the same result
// for any thread count, and a loop the compiler can vectorise).
#include <cstdint>

#include "kernels/cpu/load_store.h"

namespace mt::cpu {

constexpr int kLaneSumLanes = 8;

template <class F>
inline float lane_sum(int64_t C, F&& f) {
  float s[kLaneSumLanes] = {};
  int64_t c = 0;
  for (; c + kLaneSumLanes <= C; c += kLaneSumLanes)
    for (int j = 0; j < kLaneSumLanes; ++j) s[j] += f(c + j);
  for (int j = 0; c + j < C; ++j) s[j] += f(c + j);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// The row a norm reads: x's row, or with res the sum x + res stored into sum's row in T (the
// rounding of the unfused add); sum may alias x or res.
template <class T>
inline const T* residual_row(const T* x, const T* res, T* sum, int64_t r, int64_t C) {
  const T* xr = x + r * C;
  if (!res) return xr;
  const T* rr = res + r * C;
  T* sr = sum + r * C;
  for (int64_t c = 0; c < C; ++c) sr[c] = from_f32<T>(to_f32(xr[c]) + to_f32(rr[c]));
  return sr;
}

}  // namespace mt::cpu
