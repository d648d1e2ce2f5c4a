#pragma once
// --log-straggler (Megatron's flag; its StragglerDetector measures GPU kernel time and FLOPs):
// every log interval each rank's compute time per iteration (the interval's wall time less the
// time it waited in collectives, comm/comm_timer.h) is gathered, and rank 0 prints one line:
// min, median and max over ranks, the --straggler-minmax-count slowest and fastest, and the
// ranks slower than kStragglerThreshold x the median (and by kStragglerMinSeconds at least, so
// that sub-millisecond noise names no one), by name. Collective over the world.
//
// Test hook: MEGATRON_TEST_SLOW_RANK=R[:MS] makes world rank R sleep MS (50) ms per iteration.
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace mt {

constexpr double kStragglerThreshold = 1.10;    // slower than the median by 10%
constexpr double kStragglerMinSeconds = 0.005;  // and by 5 ms

// The report line for each rank's compute seconds per iteration (index: world rank).
std::string format_straggler_report(const std::vector<double>& seconds, int minmax_count);

class StragglerDetector {
 public:
  StragglerDetector(Communicator& world, int minmax_count) : world_(world), minmax_(minmax_count) {}
  // Gathers this rank's compute seconds per iteration; the line on world rank 0, "" elsewhere.
  std::string report(double compute_seconds_per_iter);
  // The test hook's sleep, once per iteration.
  void maybe_slow_down() const;

 private:
  Communicator& world_;
  int minmax_;
};

}  // namespace mt
