// The pipeline schedules as data: every schedule for P = 2..8 ranks, M = 1..32 microbatches and
// V = 1..4 virtual stages is complete, ordered, matched send for receive in order, and runs to
// the end under rendezvous semantics (no deadlock); 1F1B and ZB-H1 hold at most P - r
// microbatches' activations on rank r. Exact action lists pin the small cases.
#include <gtest/gtest.h>

#include "parallel/pipeline_schedule.h"

namespace mt {
namespace {

TEST(PipelineSchedule, EverySchedulePassesTheChecksForP2To8M1To32V1To4) {
  int built = 0;
  for (auto kind : {PipelineScheduleKind::OneFOneB, PipelineScheduleKind::ZeroBubbleH1})
    for (int P = 2; P <= 8; ++P)
      for (int M = 1; M <= 32; ++M)
        for (int V = 1; V <= 4; ++V) {
          if (!pipeline_schedule_problem(kind, P, M, V).empty()) continue;
          const PipelineScheduleCheck fwd = verify_pipeline_schedule(build_pipeline_schedule(kind, P, M, V, true));
          ASSERT_TRUE(fwd.ok()) << "forward-only P=" << P << " M=" << M << " V=" << V << ": " << fwd.problem;
          const PipelineSchedule s = build_pipeline_schedule(kind, P, M, V);
          const PipelineScheduleCheck c = verify_pipeline_schedule(s);
          ASSERT_TRUE(c.ok()) << pipeline_schedule_name(kind, V) << " P=" << P << " M=" << M << " V=" << V << ": "
                              << c.problem;
          ++built;
          if (V == 1)
            for (int r = 0; r < P; ++r)
            {
              EXPECT_LE(c.peak_activations[size_t(r)], std::min(P - r, M))
                  << pipeline_schedule_name(kind, V) << " P=" << P << " M=" << M << " rank " << r;
              EXPECT_LE(c.peak_deferred_weight_grads[size_t(r)], std::min(P - r, M))
                  << pipeline_schedule_name(kind, V) << " P=" << P << " M=" << M << " rank " << r;
            }
        }
  // 1F1B: 7 x 32; interleaved: the M that are multiples of P, for V = 2..4; ZB-H1: 7 x 32.
  int interleaved = 0;
  for (int P = 2; P <= 8; ++P) interleaved += 3 * (32 / P);
  EXPECT_EQ(built, 2 * 7 * 32 + interleaved);
}

TEST(PipelineSchedule, OneFOneBForTwoStagesAndThreeMicrobatches) {
  const PipelineSchedule s = build_pipeline_schedule(PipelineScheduleKind::OneFOneB, 2, 3, 1);
  EXPECT_EQ(format_pipeline_actions(s.ranks[0]),
            "F0.0 [sf0.0] F1.0 [sf1.0 rb0.0] B0.0 F2.0 [sf2.0 rb1.0] B1.0 [rb2.0] B2.0");
}

TEST(PipelineSchedule, ZeroBubbleDefersWeightPassesIntoTheBubble) {
  const PipelineSchedule s = build_pipeline_schedule(PipelineScheduleKind::ZeroBubbleH1, 2, 3, 1);
  // Rank 0 computes W passes while it waits for the last stage's input gradients.
  EXPECT_EQ(format_pipeline_actions(s.ranks[0]),
            "F0.0 [sf0.0] F1.0 [sf1.0 rb0.0] Bi0.0 F2.0 [sf2.0 rb1.0] W0.0 Bi1.0 [rb2.0] W1.0 Bi2.0 W2.0");
  EXPECT_EQ(format_pipeline_actions(s.ranks[1]),
            "[rf0.0] F0.0 Bi0.0 [sb0.0 rf1.0] W0.0 F1.0 Bi1.0 [sb1.0 rf2.0] W1.0 F2.0 Bi2.0 [sb2.0] W2.0");
}

TEST(PipelineSchedule, SimulatedBubblesMatchTheAnalyticValues) {
  for (int P : {2, 4, 8})
    for (int M : {4, 8, 16, 32}) {
      // 1F1B: (P - 1) / (M + P - 1) on every rank.
      const auto one = simulated_idle_fraction(build_pipeline_schedule(PipelineScheduleKind::OneFOneB, P, M, 1), 1, 1, 1);
      for (double idle : one) EXPECT_NEAR(idle, double(P - 1) / (M + P - 1), 1e-12) << "P=" << P << " M=" << M;
      // Interleaved with V chunks of 1/V the work each: (P - 1) / (V M + P - 1).
      for (int V : {2, 4}) {
        if (M % P) continue;
        const double u = 1.0 / V;
        const auto inter =
            simulated_idle_fraction(build_pipeline_schedule(PipelineScheduleKind::OneFOneB, P, M, V), u, u, u);
        for (double idle : inter) EXPECT_NEAR(idle, double(P - 1) / (V * M + P - 1), 1e-12) << "P=" << P << " M=" << M;
      }
      // ZB-H1 with equal F, B and W: below 1F1B's on every rank; a bubble of (P - 1)(F + B) against
      // 1F1B's (P - 1)(F + B + W) once M >= P.
      const auto zb = simulated_idle_fraction(build_pipeline_schedule(PipelineScheduleKind::ZeroBubbleH1, P, M, 1), 1, 1, 1);
      for (int r = 0; r < P; ++r) EXPECT_LT(zb[size_t(r)], one[size_t(r)]) << "P=" << P << " M=" << M << " rank " << r;
      if (M >= P) EXPECT_NEAR(zb[0], 2.0 * (P - 1) / (3 * M + 2 * (P - 1)), 1e-12) << "P=" << P << " M=" << M;
    }
}

TEST(PipelineSchedule, InterleavedWarmsUpOverTheVirtualStages) {
  const PipelineSchedule s = build_pipeline_schedule(PipelineScheduleKind::OneFOneB, 2, 4, 2);
  // Rank 0: 4 warm-up forwards over both chunks, then forward-backward steps with one batch of
  // transfers between them (both directions), then the backwards.
  EXPECT_EQ(format_pipeline_actions(s.ranks[0]),
            "F0.0 [sf0.0] F1.0 [sf1.0 rf0.1] F0.1 [sf0.1 rf1.1] F1.1 [sf1.1 rb0.1] F2.0 B0.1 [sf2.0 sb0.1 rb1.1] "
            "F3.0 B1.1 [sf3.0 sb1.1 rf2.1 rb0.0] F2.1 B0.0 [sf2.1 rf3.1 rb1.0] F3.1 B1.0 [sf3.1 rb2.1] B2.1 "
            "[sb2.1 rb3.1] B3.1 [sb3.1 rb2.0] B2.0 [rb3.0] B3.0");
}

TEST(PipelineSchedule, ProblemsNameTheFlags) {
  EXPECT_NE(pipeline_schedule_problem(PipelineScheduleKind::OneFOneB, 4, 6, 2).find("multiple of --pipeline-model-parallel-size 4"),
            std::string::npos);
  EXPECT_NE(pipeline_schedule_problem(PipelineScheduleKind::ZeroBubbleH1, 4, 8, 2).find("zb-h1"), std::string::npos);
  EXPECT_NE(pipeline_schedule_problem(PipelineScheduleKind::OneFOneB, 1, 4, 2).find("at least 2"), std::string::npos);
  EXPECT_TRUE(pipeline_schedule_problem(PipelineScheduleKind::OneFOneB, 4, 8, 2).empty());
}

TEST(PipelineSchedule, TheCheckFindsADeadlockAndAMisorderedMessage) {
  PipelineSchedule s = build_pipeline_schedule(PipelineScheduleKind::OneFOneB, 2, 2, 1);
  // Rank 1 receiving microbatch 1 before 0: an order rank 0 does not send in.
  PipelineSchedule swapped = s;
  auto& r1 = swapped.ranks[1];
  for (auto& a : r1)
    if (a.op == PipelineOp::RecvForward || a.op == PipelineOp::Forward || a.op == PipelineOp::Backward ||
        a.op == PipelineOp::SendBackward)
      a.microbatch = 1 - a.microbatch;
  EXPECT_NE(verify_pipeline_schedule(swapped).problem.find("order"), std::string::npos)
      << verify_pipeline_schedule(swapped).problem;
  // Rank 0 waiting for a gradient before sending the activation it depends on.
  PipelineSchedule dead;
  dead.pipeline_size = 2;
  dead.num_microbatches = 1;
  dead.ranks = {{{PipelineOp::Forward, 0, 0}, {PipelineOp::RecvBackward, 0, 0, 1}, {PipelineOp::Backward, 0, 0},
                 {PipelineOp::SendForward, 0, 0, 1}},
                {{PipelineOp::RecvForward, 0, 0, 0}, {PipelineOp::Forward, 0, 0}, {PipelineOp::Backward, 0, 0},
                 {PipelineOp::SendBackward, 0, 0, 0}}};
  const auto c = verify_pipeline_schedule(dead);
  EXPECT_NE(c.problem.find("deadlock"), std::string::npos) << c.problem;
}

}  // namespace
}  // namespace mt
