#pragma once
// Time spent in collectives, per group ("tp", "dp", ...), for the trainer's communication
// report (--timing-log-level 1). Off by default, and then nothing is recorded.
//
// Host collectives (MPI) add their wall time. Device collectives (NCCL) add a deferred reading
// (a pair of CUDA events around the collective on its stream) that is resolved, waiting for the
// events, when the report is taken. A device collective's time is the NCCL kernel's time on
// the GPU, waiting for peers included; one on the side stream overlaps computation, so its
// group's time is not all on the critical path.
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mt::dist {

void set_comm_timing(bool on);
bool comm_timing();
void comm_time_add(const std::string& group, double seconds);
void comm_time_add_deferred(const std::string& group, std::function<double()> seconds);
// Seconds per group since the last call, groups in first-use order.
std::vector<std::pair<std::string, double>> comm_time_take();

}  // namespace mt::dist
