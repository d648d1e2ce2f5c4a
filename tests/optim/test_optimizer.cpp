#include <gtest/gtest.h>

#include <cmath>

#include "kernels/elementwise.h"
#include "optim/optimizer.h"

using namespace mt;

namespace {
struct TwoParams {
  ParamAndGradBuffer buf;
  ParamAndGradBuffer::Id w, b;
  explicit TwoParams(DType dt) {
    w = buf.add("w", {4}, false);
    b = buf.add("b", {4}, true);
    buf.allocate(dt, Device::cpu());
    fill(buf.param(w), 1.0f);
    fill(buf.param(b), 1.0f);
  }
};
}  // namespace

TEST(AdamWOptimizer, WeightDecaySkipsNoDecayParameters) {
  TwoParams m(DType::F32);
  AdamWOptimizer opt(m.buf, {0.5, 0.9, 0.999, 1e-8, 0.0});
  // zero grads: Adam's update is 0, only decay moves the weights
  StepStats st = opt.step(0.1, 1.0);
  EXPECT_FALSE(st.skipped);
  EXPECT_FLOAT_EQ(m.buf.param(m.w).data<float>()[0], 1.0f * (1.0f - 0.1f * 0.5f));
  EXPECT_FLOAT_EQ(m.buf.param(m.b).data<float>()[0], 1.0f);
}

TEST(AdamWOptimizer, ClipsToMaxNormAndReportsUnclippedNorm) {
  TwoParams m(DType::F32);
  fill(m.buf.grad(m.w), 3.0f);  // norm = sqrt(4*9 + 4*16) = 10
  fill(m.buf.grad(m.b), 4.0f);
  AdamWOptimizer opt(m.buf, {0.0, 0.9, 0.999, 1e-8, 1.0});
  StepStats st = opt.step(0.1, 1.0);
  EXPECT_NEAR(st.grad_norm, 10.0, 1e-9);
  // First Adam step moves each weight by lr * sign(g) regardless of clipping (m/sqrt(v) = 1).
  EXPECT_NEAR(m.buf.param(m.w).data<float>()[0], 0.9f, 1e-5);
  EXPECT_NEAR(opt.exp_avg().data<float>()[0], 0.1f * 3.0f / 10.0f, 1e-6);  // clipped grad in m
}

TEST(AdamWOptimizer, LossScaleIsRemovedAndOverflowSkipsTheStep) {
  TwoParams m(DType::F16);
  fill(m.buf.grad(m.w), 1024.0f);
  AdamWOptimizer opt(m.buf, {0.0, 0.9, 0.999, 1e-8, 0.0});
  StepStats st = opt.step(0.1, 1024.0);
  EXPECT_FALSE(st.skipped);
  EXPECT_NEAR(st.grad_norm, 2.0, 1e-9);  // 4 elements of 1.0 after unscaling
  m.buf.grad(m.w).data<float>()[1] = INFINITY;
  float before = m.buf.param(m.w).data<uint16_t>()[0];
  st = opt.step(0.1, 1024.0);
  EXPECT_TRUE(st.skipped);
  EXPECT_EQ(before, m.buf.param(m.w).data<uint16_t>()[0]);
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(AdamWOptimizer, HalfModelKeepsFp32MasterAndWritesRoundedParams) {
  TwoParams m(DType::BF16);
  fill(m.buf.grad(m.w), 1.0f);
  AdamWOptimizer opt(m.buf, {0.0, 0.9, 0.999, 1e-8, 0.0});
  opt.step(1e-3, 1.0);
  EXPECT_NEAR(opt.master().data<float>()[0], 1.0f - 1e-3f, 1e-6);  // fp32 keeps the small step
  EXPECT_EQ(opt.master().dtype(), DType::F32);
}
