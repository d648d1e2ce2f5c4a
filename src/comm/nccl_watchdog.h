#pragma once
// The NCCL watchdog (internal to dist/): collectives are enqueued on CUDA streams and the host
// does not wait for them, so a dead or hung peer is caught here instead of by a blocking wait.
// Each collective's completion event is handed over with a deadline (the group's timeout); a
// background thread polls the events and the communicators' asynchronous errors, and past a
// deadline or on an NCCL error prints which rank waited on what, aborts the NCCL communicator
// and ends the job (exit code 3), like the MPI backend's deadline does.
#ifdef MT_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

namespace mt::dist {

// Takes ownership of `done` (recorded on the collective's stream right after it).
// `what` names the rank, the collective and the group for the message.
void nccl_watch(cudaEvent_t done, int device, ncclComm_t comm, std::string what);
// Before destroying `comm`: waits until none of its collectives is still watched.
void nccl_unwatch(ncclComm_t comm);

}  // namespace mt::dist
#endif
