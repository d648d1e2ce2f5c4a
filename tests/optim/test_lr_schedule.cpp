#include <gtest/gtest.h>

#include <cmath>

#include "optim/lr_schedule.h"

using namespace mt;

TEST(LrSchedule, LinearWarmupThenCosineDecayToMinLr) {
  OptimizerParamScheduler s({1.0, 0.1, 10, 110, LrDecayStyle::Cosine});
  EXPECT_DOUBLE_EQ(s.lr(1), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(10), 1.0);
  EXPECT_NEAR(s.lr(60), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through decay
  EXPECT_NEAR(s.lr(110), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(s.lr(500), 0.1);
}

TEST(LrSchedule, LinearDecayIsLinearAfterWarmup) {
  OptimizerParamScheduler s({2.0, 0.0, 0, 100, LrDecayStyle::Linear});
  EXPECT_DOUBLE_EQ(s.lr(0), 2.0);
  EXPECT_DOUBLE_EQ(s.lr(25), 1.5);
  EXPECT_DOUBLE_EQ(s.lr(100), 0.0);
}

TEST(LrSchedule, ConstantKeepsPeakAfterWarmup) {
  OptimizerParamScheduler s({3e-4, 0.0, 4, 100, LrDecayStyle::Constant});
  EXPECT_DOUBLE_EQ(s.lr(2), 1.5e-4);
  EXPECT_DOUBLE_EQ(s.lr(99), 3e-4);
  EXPECT_DOUBLE_EQ(s.lr(1000), 3e-4);
}

TEST(LrSchedule, InverseSquareRootDecaysFromWarmupEnd) {
  OptimizerParamScheduler s({1.0, 0.0, 4, 100, LrDecayStyle::InverseSquareRoot});
  EXPECT_DOUBLE_EQ(s.lr(4), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(16), 0.5);
}

TEST(LrSchedule, ParsesMegatronStyleNames) {
  LrDecayStyle st;
  EXPECT_TRUE(parse_lr_decay_style("cosine", st));
  EXPECT_EQ(st, LrDecayStyle::Cosine);
  EXPECT_FALSE(parse_lr_decay_style("exponential", st));
}
