#include "train/exit_signal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <initializer_list>

namespace mt {
namespace {

volatile std::sig_atomic_t g_exit_signal = 0;
bool g_under_open_mpi = false;  // started by Open MPI's mpirun (read at install: getenv is not signal-safe)

void discard_standard_streams() {
  const int null = open("/dev/null", O_WRONLY);
  if (null < 0) return;
  dup2(null, STDOUT_FILENO);
  dup2(null, STDERR_FILENO);
  close(null);
}

extern "C" void on_exit_signal(int sig) {
  if (g_exit_signal == 0) g_exit_signal = sig;
  // mpirun, on SIGTERM or SIGINT, stops reading the ranks' output: a log line would block this rank
  // in write() (a full pty) until mpirun's SIGKILL. The rest of its output goes to /dev/null; a
  // write blocked now restarts (SA_RESTART) on the new file.
  if (g_under_open_mpi && sig != SIGUSR1) discard_standard_streams();
}

// SIGPIPE: if stdout or stderr lost its reader (mpirun tearing down its output relay), point it at
// /dev/null, so the write fails once and later ones succeed. Only async-signal-safe calls.
extern "C" void on_broken_pipe(int) {
  const int saved_errno = errno;
  for (int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    pollfd p{fd, 0, 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) {
      const int null = open("/dev/null", O_WRONLY);
      if (null >= 0) {
        dup2(null, fd);
        close(null);
      }
    }
  }
  errno = saved_errno;
}

void set_handler(int sig, void (*fn)(int)) {
  struct sigaction sa {};
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // file and socket calls in flight resume instead of failing with EINTR
  sigaction(sig, &sa, nullptr);
}

}  // namespace

void install_exit_signal_handler() {
  g_under_open_mpi = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) set_handler(sig, on_exit_signal);
  set_handler(SIGPIPE, on_broken_pipe);
}

bool exit_signal_received() { return g_exit_signal != 0; }

bool launcher_is_ending_job() { return g_under_open_mpi && g_exit_signal != 0 && g_exit_signal != SIGUSR1; }

const char* exit_signal_name() {
  switch (g_exit_signal) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "";
  }
}

}  // namespace mt
