#pragma once
// MPI backend of Communicator, and the process runtime (init, world, finalize).
//
// Host tensors go straight to MPI; device tensors are staged through host memory (correct,
// slow: the NCCL backend replaces this for GPUs). Reductions are done by us, not by MPI's
// reduction ops, so they are deterministic and identical on every rank: reduce_scatter is an
// all-to-all followed by a rank-ordered fp32 sum of the chunk each rank owns; all_reduce is
// reduce_scatter + all_gather. Every request is waited on with a deadline (the group's
// timeout, --distributed-timeout-minutes): past it, the rank names itself, the collective and
// the group, and calls MPI_Abort, which takes the whole job down instead of hanging.
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace mt::dist {

// True when this process was started by an MPI launcher (mpirun/mpiexec, srun with PMI/PMIx).
bool launched_by_mpi();
// This process's world rank as the launcher's environment gives it (before MPI_Init; 0 alone).
int launcher_rank();
// The number of processes the launcher started (before MPI_Init; 1 alone): Open MPI's, PMI's, or
// Slurm's (SLURM_STEP_NUM_TASKS, else SLURM_NTASKS, with SLURM_PROCID set: a task of srun).
int launcher_size();
// This process's rank on its node (one process per GPU chooses GPU local_rank % GPUs): mpirun's,
// MPICH's, Slurm's SLURM_LOCALID, or torchrun-style LOCAL_RANK; 0 alone.
int local_rank();
// "mpirun", "srun", "MPI" (another PMI launcher) or "none": for the start-up line.
const char* launcher_name();
// srun without a PMI (srun --mpi=none, or a Slurm built without PMIx): every task would be an
// MPI world of its own and train alone. UserError naming --mpi=pmix when Slurm says several
// tasks and MPI sees one. Call after init().
void check_launch();
// MPI_Init_thread (FUNNELED) if not yet initialised and launched_by_mpi() or force; idempotent.
// Returns whether MPI is initialised. MPI_Finalize is registered to run at exit.
bool init(bool force = false);
bool mpi_active();
// The process exits without MPI_Finalize: for a job its launcher is already ending (Open MPI's
// mpirun after SIGTERM, whose finalize handshake would only time out, past its SIGKILL).
void skip_finalize_at_exit();
int world_rank();  // 0 without MPI
int world_size();  // 1 without MPI
// Every collective issued afterwards waits at most this long (seconds) before aborting the job.
void set_timeout_seconds(double s);
double timeout_seconds();
// The world group: MPI_COMM_WORLD when MPI is active, else a SelfCommunicator.
std::unique_ptr<Communicator> world();
// A group of just this process (MPI_COMM_SELF semantics, no MPI calls).
std::unique_ptr<Communicator> self(const std::string& name = "self");
// Ends the job now with exit code `code` on every rank (MPI_Abort), or std::exit without MPI.
[[noreturn]] void abort_job(int code);

}  // namespace mt::dist
