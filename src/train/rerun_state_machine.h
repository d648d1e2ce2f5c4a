#pragma once
// NaN/Inf in the loss or grad norm, and Megatron's re-run of an iteration (its
// megatron/core/rerun_state_machine.py, reduced to what one job can decide by itself).
//
// Each iteration's forward, backward and gradient reduction run through RerunStateMachine::run,
// which checks the result before the optimizer step (--check-for-nan-in-loss-and-grad):
//   disabled          a NaN/Inf stops training at once;
//   validate_results  the iteration runs again from the same state (the parameters are untouched
//                     until the step; the data and the dropout masks are fixed by the iteration):
//                     finite then, it was a transient fault (said on stderr; training goes on with
//                     the re-run's result, so the losses that follow are those of a run without
//                     the fault); NaN again, a data or model problem: stop.
//   report_stats      every iteration runs twice; how often the loss and the grad norm differed
//                     is reported every log interval (non-determinism), the second result used.
// Stopping throws TrainingStopped (exit code 1): one line naming the iteration and the rank(s)
// whose own loss was not finite. Megatron differs: after a reproducible NaN it checkpoints and
// exits (16) to be re-run on another GPU, and it exits (17) after a transient one too.
//
// Test hook: MEGATRON_TEST_INJECT_NAN=ITER[:RANK][:once|always] makes the loss of iteration ITER
// NaN on world rank RANK (every rank when left out) in the first run only, or in the re-run too.
// --error-injection-rate N / --error-injection-type (Megatron's) inject alike on about one
// iteration in N (a hash of the seed, the iteration and the rank: the same on a rerun of the job).
#include <cstdint>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>

#include "comm/communicator.h"
#include "optim/optimizer.h"

namespace mt {

// A training run that cannot go on (not a bad input): the app prints the line and exits 1.
struct TrainingStopped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class RerunMode { Disabled, ValidateResults, ReportStats };
RerunMode parse_rerun_mode(const std::string& name);  // UserError naming --rerun-mode

// One run of an iteration up to the optimizer step.
struct IterationResult {
  double local_loss = 0;  // this rank's loss before the data-parallel reduction (0 off the last stage)
  double loss = 0;        // the iteration's loss (reduced over data parallelism)
  GradStats grads;        // for MegatronOptimizer::apply
};

struct NanInjection {
  int64_t iteration = -1;  // -1: none
  int rank = -1;           // -1: every rank
  bool always = false;     // in the re-run too
  int64_t rate = 0;        // --error-injection-rate
  uint64_t seed = 0;
};
// MEGATRON_TEST_INJECT_NAN (UserError when malformed), then --error-injection-*.
NanInjection nan_injection(int64_t rate, const std::string& type, uint64_t seed);

class RerunStateMachine {
 public:
  // check_grads: also check the grad norm (off for fp16, whose scaler skips overflowing steps).
  // world: every rank takes part in each verdict; log0: rank 0's log (null elsewhere).
  RerunStateMachine(bool check, RerunMode mode, bool check_grads, NanInjection inject, Communicator& world,
                    std::FILE* log0);
  // Runs `step` (which must start from zeroed grads and be a pure function of the state before
  // it) once, or twice as the mode says. Returns the result the optimizer steps with.
  IterationResult run(int64_t iteration, const std::function<IterationResult()>& step);
  // Whether the run in progress of `iteration` should make this rank's loss NaN (the test hook).
  bool poison(int64_t iteration) const;
  // report_stats: a line for the log interval just ended ("" otherwise), counters reset.
  std::string take_stats();

 private:
  bool bad(const IterationResult& r) const;
  // Whether any rank's result is bad; names those whose own loss was (ranks) when so.
  bool any_bad(const IterationResult& r, std::string& ranks) const;

  bool check_, check_grads_;
  RerunMode mode_;
  NanInjection inject_;
  Communicator& world_;
  std::FILE* log0_;
  int attempt_ = 0;
  int64_t stat_runs_ = 0, stat_loss_diff_ = 0, stat_norm_diff_ = 0;
  double stat_loss_max_ = 0, stat_norm_max_ = 0;
};

}  // namespace mt
