#include "train/rerun_state_machine.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace mt {

RerunMode parse_rerun_mode(const std::string& name) {
  if (name == "disabled") return RerunMode::Disabled;
  if (name == "validate_results") return RerunMode::ValidateResults;
  if (name == "report_stats") return RerunMode::ReportStats;
  MT_USER_ERROR("--rerun-mode {}: expected disabled, validate_results or report_stats", name);
}

NanInjection nan_injection(int64_t rate, const std::string& type, uint64_t seed) {
  NanInjection n;
  n.rate = rate;
  n.always = type != "transient_error";
  n.seed = seed;
  const char* env = std::getenv("MEGATRON_TEST_INJECT_NAN");
  if (!env || !*env) return n;
  const std::string s = env;
  std::vector<std::string> parts;
  for (size_t i = 0, j; i <= s.size(); i = j + 1) {
    j = s.find(':', i);
    if (j == std::string::npos) j = s.size();
    parts.push_back(s.substr(i, j - i));
  }
  auto number = [&](const std::string& p) {
    char* end = nullptr;
    const long long v = std::strtoll(p.c_str(), &end, 10);
    if (p.empty() || *end || v < 0)
      MT_USER_ERROR("MEGATRON_TEST_INJECT_NAN={}: expected ITER[:RANK][:once|always]", s);
    return int64_t(v);
  };
  n.iteration = number(parts[0]);
  n.always = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "once" || parts[i] == "always")
      n.always = parts[i] == "always";
    else if (i == 1)
      n.rank = int(number(parts[i]));
    else
      MT_USER_ERROR("MEGATRON_TEST_INJECT_NAN={}: expected ITER[:RANK][:once|always]", s);
  }
  return n;
}

RerunStateMachine::RerunStateMachine(bool check, RerunMode mode, bool check_grads, NanInjection inject,
                                     Communicator& world, std::FILE* log0)
    : check_(check), check_grads_(check_grads), mode_(mode), inject_(inject), world_(world), log0_(log0) {}

bool RerunStateMachine::poison(int64_t iteration) const {
  if (attempt_ > 0 && !inject_.always) return false;
  if (inject_.iteration >= 0)
    return iteration == inject_.iteration && (inject_.rank < 0 || inject_.rank == world_.rank());
  if (inject_.rate <= 0) return false;
  // splitmix64 of (seed, iteration, rank): about one iteration in `rate` per rank.
  uint64_t z = inject_.seed * 0x9E3779B97F4A7C15ull + uint64_t(iteration) * 0xBF58476D1CE4E5B9ull +
               uint64_t(world_.rank()) * 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z % uint64_t(inject_.rate) == 0;
}

bool RerunStateMachine::bad(const IterationResult& r) const {
  return !std::isfinite(r.local_loss) || !std::isfinite(r.loss) ||
         (check_grads_ && (!r.grads.finite || !std::isfinite(r.grads.sum_squares)));
}

bool RerunStateMachine::any_bad(const IterationResult& r, std::string& ranks) const {
  // One scalar over the world per iteration; the per-rank picture only when something is wrong.
  if (world_.all_reduce_scalar(bad(r) ? 1.0 : 0.0, ReduceOp::Max) == 0.0) return false;
  std::vector<double> own(size_t(world_.size()), 0.0);
  own[size_t(world_.rank())] = std::isfinite(r.local_loss) ? 0.0 : 1.0;
  world_.all_reduce_f64(own.data(), int(own.size()), ReduceOp::Max);
  ranks.clear();
  for (size_t i = 0; i < own.size(); ++i)
    if (own[i] != 0.0) ranks += (ranks.empty() ? "" : ",") + std::to_string(i);
  ranks = ranks.empty() ? "the grad norm (every rank, after the gradient reduction; no rank's own loss was)"
                        : "the loss on rank(s) " + ranks;
  return true;
}

IterationResult RerunStateMachine::run(int64_t iteration, const std::function<IterationResult()>& step) {
  attempt_ = 0;
  IterationResult first = step();
  if (!check_ && mode_ != RerunMode::ReportStats) return first;
  std::string where;
  const bool first_bad = check_ && any_bad(first, where);
  if (first_bad && mode_ != RerunMode::ValidateResults)
    throw TrainingStopped(fmt::format("iteration {}: NaN/Inf in {} (--check-for-nan-in-loss-and-grad; "
                                      "--rerun-mode {} did not re-run it)",
                                      iteration, where, mode_ == RerunMode::Disabled ? "disabled" : "report_stats"));
  if (!first_bad && mode_ != RerunMode::ReportStats) return first;
  attempt_ = 1;
  IterationResult again = step();
  attempt_ = 0;
  if (mode_ == RerunMode::ReportStats) {
    const double dl = std::fabs(again.loss - first.loss),
                 dn = std::fabs(std::sqrt(again.grads.sum_squares) - std::sqrt(first.grads.sum_squares));
    ++stat_runs_;
    if (dl != 0) ++stat_loss_diff_;
    if (dn != 0) ++stat_norm_diff_;
    stat_loss_max_ = std::max(stat_loss_max_, dl);
    stat_norm_max_ = std::max(stat_norm_max_, dn);
    if (check_ && any_bad(again, where))
      throw TrainingStopped(fmt::format("iteration {}: NaN/Inf in {} (--check-for-nan-in-loss-and-grad)", iteration, where));
    return again;
  }
  std::string where_again;
  if (any_bad(again, where_again))
    throw TrainingStopped(fmt::format(
        "iteration {}: NaN/Inf in {} (--check-for-nan-in-loss-and-grad), and again in {} when the iteration was re-run "
        "from the same state (--rerun-mode validate_results): a data or model problem, not a transient fault (lower "
        "--lr, check the data around these samples, or resume from an earlier checkpoint)",
        iteration, where, where_again));
  if (log0_) {
    std::fflush(log0_);
    std::fprintf(stderr,
                 "> warning: iteration %lld: NaN/Inf in %s; the re-run from the same state gave a finite loss "
                 "(%.6E): a transient fault (--rerun-mode validate_results), training goes on with the re-run's "
                 "result\n",
                 (long long)iteration, where.c_str(), again.loss);
    std::fflush(stderr);
  }
  return again;
}

std::string RerunStateMachine::take_stats() {
  if (mode_ != RerunMode::ReportStats || stat_runs_ == 0) return "";
  std::string s = fmt::format(
      " rerun stats (--rerun-mode report_stats): {} iteration(s) run twice; the loss differed in {} (max |diff| "
      "{:.3E}), the grad norm in {} (max |diff| of the scaled norm {:.3E})",
      stat_runs_, stat_loss_diff_, stat_loss_max_, stat_norm_diff_, stat_norm_max_);
  stat_runs_ = stat_loss_diff_ = stat_norm_diff_ = 0;
  stat_loss_max_ = stat_norm_max_ = 0;
  return s;
}

}  // namespace mt
