#pragma once
// --exit-signal-handler (Megatron's): SIGTERM, SIGINT and SIGUSR1 set a flag instead of ending the
// process; the trainer reduces the flag over the world at the end of every iteration, so all ranks
// stop after the same iteration, save a checkpoint (with --save) and exit 0.
//
// Under Open MPI's mpirun (4.x), SIGTERM or SIGINT sent to mpirun is forwarded to every rank as
// SIGTERM, and mpirun then stops relaying the ranks' output: a rank that writes its log line next
// would die of SIGPIPE before it saves. With the handler installed, a write to a standard stream
// whose reader has gone sends that stream to /dev/null instead, and the rank carries on. mpirun
// sends SIGKILL odls_base_sigkill_timeout seconds (default 1) after its SIGTERM and exits 1
// whatever the ranks do; SIGUSR1 is relayed without either (README: "Stopping a run").
namespace mt {

void install_exit_signal_handler();
bool exit_signal_received();     // this process's flag
const char* exit_signal_name();  // the first signal received ("SIGTERM", ...), "" if none
// True when the signal came through Open MPI's mpirun ending the job (SIGTERM, SIGINT): it no longer
// answers MPI_Finalize's handshake, so the ranks leave without it once the checkpoint is written.
bool launcher_is_ending_job();

}  // namespace mt
