#include <gtest/gtest.h>

#include "optim/grad_scaler.h"

using namespace mt;

TEST(GradScaler, BacksOffAfterHysteresisOverflowsAndGrowsAfterWindow) {
  GradScalerConfig c;
  c.initial_scale = 1024;
  c.growth_interval = 3;
  c.hysteresis = 2;
  GradScaler s(c);
  s.update(true);
  EXPECT_EQ(s.scale(), 1024);  // first overflow absorbed by hysteresis
  s.update(true);
  EXPECT_EQ(s.scale(), 512);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 512);
  s.update(false);
  EXPECT_EQ(s.scale(), 1024);
}

TEST(GradScaler, NeverGoesBelowMinScale) {
  GradScalerConfig c;
  c.initial_scale = 4;
  c.min_scale = 2;
  c.hysteresis = 1;
  GradScaler s(c);
  for (int i = 0; i < 5; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 2);
}

TEST(GradScaler, ConstantScalerNeverChanges) {
  GradScalerConfig c;
  c.dynamic = false;
  c.initial_scale = 128;
  GradScaler s(c);
  s.update(true);
  s.update(false);
  EXPECT_EQ(s.scale(), 128);
}
