#pragma once
// Philox4x32-10 counter-based generator (Salmon et al., SC'11). A random number is a pure
// function of (seed, stream, index): no state to carry, the same on CPU and GPU, and
// independent of how work is split across threads, ranks or devices. `stream` separates
// purposes (a parameter's init, a dropout site, a data shuffle); `index` is the element.
#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>

#include "core/half.h"  // MT_HD

namespace mt {

MT_HD void philox4x32_10(uint32_t ctr[4], uint32_t key[2]) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * ctr[0], p1 = uint64_t(M1) * ctr[2];
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0), hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ ctr[1] ^ key[0], n2 = hi0 ^ ctr[3] ^ key[1];
    ctr[0] = n0; ctr[1] = lo1; ctr[2] = n2; ctr[3] = lo0;
    key[0] += W0; key[1] += W1;
  }
}

// Four 32-bit random words for block `block` of (seed, stream).
MT_HD void philox_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]) {
  uint32_t ctr[4] = {uint32_t(block), uint32_t(block >> 32), uint32_t(stream), uint32_t(stream >> 32)};
  uint32_t key[2] = {uint32_t(seed), uint32_t(seed >> 32)};
  philox4x32_10(ctr, key);
  out[0] = ctr[0]; out[1] = ctr[1]; out[2] = ctr[2]; out[3] = ctr[3];
}

MT_HD uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t index) {
  uint32_t r[4];
  philox_block(seed, stream, index >> 2, r);
  return r[index & 3];
}

// Uniform in (0, 1]: never 0, so log() is safe.
MT_HD float u32_to_uniform(uint32_t x) { return (float(x >> 8) + 1.0f) * (1.0f / 16777216.0f); }

MT_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return u32_to_uniform(philox_u32(seed, stream, index));
}

// Standard normal for element `index` (Box-Muller on one Philox block; deterministic).
MT_HD float philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  uint32_t r[4];
  philox_block(seed, stream, index, r);
  float u1 = u32_to_uniform(r[0]), u2 = u32_to_uniform(r[1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

// A stream id from a name (FNV-1a 64): "init/decoder.layers.3.mlp.fc1.weight", "data/shuffle".
constexpr uint64_t rng_stream(std::string_view name) {
  uint64_t h = 1469598103934665603ull;
  for (char c : name) {
    h ^= uint8_t(c);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace mt
