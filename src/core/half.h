#pragma once
// bf16 and fp16 storage types with fp32 conversion (round to nearest even), usable on host
// and device. CPU kernels load them to fp32, compute, and store back.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MT_HD __host__ __device__ inline
#else
#define MT_HD inline
#endif

namespace mt {

struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

MT_HD float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
MT_HD uint32_t f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

MT_HD float to_f32(bf16 h) { return bits_to_f32(uint32_t(h.bits) << 16); }
MT_HD bf16 to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

MT_HD float to_f32(f16 h) {
  uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}
MT_HD f16 to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u)};
  if (a >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // rounds to >= 65520: inf
  if (a < 0x38800000u) {  // below the smallest normal 2^-14: subnormal or zero
    float v = bits_to_f32(a) * 16777216.0f;  // scale by 2^24; round to nearest even integer
    uint32_t m = uint32_t(v);
    float frac = v - float(m);
    if (frac > 0.5f || (frac == 0.5f && (m & 1u))) ++m;
    return f16{uint16_t(sign | m)};
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return f16{uint16_t(sign | ((r - 0x38000000u) >> 13))};
}

MT_HD float to_f32(float f) { return f; }
template <class T> MT_HD T from_f32(float f);
template <> MT_HD float from_f32<float>(float f) { return f; }
template <> MT_HD bf16 from_f32<bf16>(float f) { return to_bf16(f); }
template <> MT_HD f16 from_f32<f16>(float f) { return to_f16(f); }

}  // namespace mt
