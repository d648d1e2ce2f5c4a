// bf16 / fp16 conversions (core/half.h): exact round trips of every 16-bit pattern, round to
// nearest even, subnormals, overflow to inf, and NaN kept NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/half.h"

namespace mt {
namespace {

float from_bits(uint32_t u) { return bits_to_f32(u); }

TEST(Bf16, EveryBitPatternRoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = to_f32(bf16{uint16_t(b)});
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(to_f32(to_bf16(f)))) << std::hex << b;
    } else {
      ASSERT_EQ(to_bf16(f).bits, b) << std::hex << b;
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(to_bf16(1.0f + 0x1p-8f).bits, 0x3f80);                     // tie, 1.0 is even: down
  EXPECT_EQ(to_bf16(1.0f + 3 * 0x1p-8f).bits, 0x3f82);                 // tie, 1+2^-7 is odd: up
  EXPECT_EQ(to_bf16(1.0f + 0x1p-8f + 0x1p-20f).bits, 0x3f81);          // above the tie: up
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()).bits, 0x7f80);  // overflows to +inf
  EXPECT_EQ(to_bf16(-INFINITY).bits, 0xff80);
  EXPECT_TRUE(std::isnan(to_f32(to_bf16(NAN))));
  EXPECT_EQ(to_bf16(from_bits(0x00010000)).bits, 0x0001);  // a float subnormal stays exact
}

// Nearest bf16 by an independent route: compare the two neighbours' distances in double
// (the neighbour past the largest finite bf16 is inf, which rounding treats as 2^128).
TEST(Bf16, MatchesNearestEvenOnASweepOfFloats) {
  auto value = [](uint32_t bits) {
    const float f = from_bits(bits);
    return std::isinf(f) ? std::copysign(std::ldexp(1.0, 128), double(f)) : double(f);
  };
  for (uint64_t u = 0; u < (1ull << 32); u += 40009) {
    const float f = from_bits(uint32_t(u));
    if (!std::isfinite(f)) continue;
    const uint32_t lo = uint32_t(u) & 0xffff0000u, hi = lo + 0x10000u;
    const double dl = std::abs(double(f) - value(lo)), dh = std::abs(value(hi) - double(f));
    const uint32_t want = (dl < dh || (dl == dh && ((lo >> 16) & 1) == 0)) ? lo : hi;
    ASSERT_EQ(to_bf16(f).bits, uint16_t(want >> 16)) << std::hex << u;
  }
}

TEST(F16, EveryBitPatternRoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = to_f32(f16{uint16_t(b)});
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(to_f32(to_f16(f)))) << std::hex << b;
    } else {
      ASSERT_EQ(to_f16(f).bits, b) << std::hex << b;
    }
  }
}

TEST(F16, KnownValuesSubnormalsAndSpecials) {
  EXPECT_EQ(to_f16(1.0f).bits, 0x3c00);
  EXPECT_EQ(to_f16(-2.0f).bits, 0xc000);
  EXPECT_EQ(to_f16(65504.0f).bits, 0x7bff);  // largest finite
  EXPECT_EQ(to_f16(65519.0f).bits, 0x7bff);  // below the midpoint to 65536
  EXPECT_EQ(to_f16(65520.0f).bits, 0x7c00);  // the midpoint rounds (to even) to inf
  EXPECT_EQ(to_f16(INFINITY).bits, 0x7c00);
  EXPECT_EQ(to_f16(-INFINITY).bits, 0xfc00);
  EXPECT_EQ(to_f16(-0.0f).bits, 0x8000);
  EXPECT_EQ(to_f16(0x1p-14f).bits, 0x0400);             // smallest normal
  EXPECT_EQ(to_f16(0x1p-24f).bits, 0x0001);             // smallest subnormal
  EXPECT_EQ(to_f16(0x1p-25f).bits, 0x0000);             // tie with 0 (even): down
  EXPECT_EQ(to_f16(3 * 0x1p-26f).bits, 0x0001);         // 0.75 ulp: up
  EXPECT_EQ(to_f16(1023.5f * 0x1p-24f).bits, 0x0400);   // tie between the largest subnormal and 2^-14
  EXPECT_EQ(to_f16(1.0f + 0x1p-11f).bits, 0x3c00);      // tie, even: down
  EXPECT_EQ(to_f16(1.0f + 3 * 0x1p-11f).bits, 0x3c02);  // tie, odd: up
  EXPECT_EQ(to_f32(f16{0x0001}), 0x1p-24f);
  EXPECT_EQ(to_f32(f16{0x83ff}), -1023 * 0x1p-24f);
  EXPECT_TRUE(std::isnan(to_f32(f16{0x7e00})));
  EXPECT_TRUE(std::isnan(to_f32(to_f16(NAN))));
}

#if defined(__FLT16_MAX__)
// The compiler's own float -> _Float16 conversion (IEEE round to nearest even) as the oracle.
TEST(F16, MatchesTheCompilersFloat16OnASweepOfFloats) {
  for (uint64_t u = 0; u < (1ull << 32); u += 40009) {
    const float f = from_bits(uint32_t(u));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(to_f16(f).bits, want) << std::hex << u;
  }
}
#endif

}  // namespace
}  // namespace mt
