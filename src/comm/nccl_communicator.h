#pragma once
// NCCL backend of Communicator, for device tensors (built when CUDA and NCCL are found:
// MT_WITH_NCCL). Collectives are enqueued on the compute stream (the default stream the kernels
// use) without the host waiting; the *_async ones go to the communicator's high-priority side
// stream after the work already on the compute stream, and their handle's wait() makes the
// compute stream wait for them (data-parallel overlap). Every collective is handed to the
// watchdog (nccl_watchdog.h) with the group's deadline, so a dead or hung peer ends the job
// instead of hanging it (ncclCommAbort, then MPI_Abort).
//
// Reductions are NCCL's: deterministic for a fixed communicator and size, identical on every
// rank (each chunk is reduced once and then broadcast), summed in the tensor's dtype per hop
// (bf16 grads are reduced in bf16; main grads are fp32).
//
// HybridCommunicator pairs an NCCL communicator with an MPI one over the same ranks and sends
// each call to the one for its tensors' device, so a ProcessGroups built on it serves the
// host-side bookkeeping (losses, norms, reports) and the device-side gradients alike.
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace mt::dist {

bool nccl_available();  // false in a build without NCCL

// A communicator over the ranks of `bootstrap` (an MPI group) for CUDA device `device`, which
// becomes this process's current device; the NCCL unique id is broadcast from bootstrap rank 0.
// Collective over bootstrap.
std::unique_ptr<Communicator> nccl_communicator(Communicator& bootstrap, const std::string& name, int device);

// One process driving several GPUs (tests): a communicator per device, from ncclCommInitAll.
// Each must be used from its own thread with that device current.
std::vector<std::unique_ptr<Communicator>> nccl_communicators_for_devices(const std::vector<int>& devices);

// Device tensors to `device`, host tensors and doubles to `host`; split() splits both.
std::unique_ptr<Communicator> hybrid_communicator(std::unique_ptr<Communicator> host,
                                                  std::unique_ptr<Communicator> device);

}  // namespace mt::dist
