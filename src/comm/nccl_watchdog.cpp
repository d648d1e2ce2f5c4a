#include "comm/nccl_watchdog.h"

#ifdef MT_WITH_NCCL
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/mpi_communicator.h"

namespace mt::dist {
namespace {

using Clock = std::chrono::steady_clock;

struct Watched {
  cudaEvent_t done;
  int device;
  ncclComm_t comm;
  Clock::time_point deadline;
  std::string what;
};

class Watchdog {
 public:
  static Watchdog& get() {
    // Never destroyed (threads and CUDA teardown at exit do not mix); stopped by an atexit
    // handler registered after CUDA's own, so it runs first.
    static Watchdog* w = new Watchdog;
    return *w;
  }

  void watch(Watched w) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) {
      thread_ = std::thread([this] { loop(); });
      std::atexit([] { Watchdog::get().stop(); });
    }
    pending_.push_back(std::move(w));
    cv_.notify_one();
  }

  void unwatch(ncclComm_t comm) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] {
      return std::none_of(pending_.begin(), pending_.end(), [&](const Watched& w) { return w.comm == comm; });
    });
  }

 private:
  void stop() {
    if (thread_.get_id() == std::this_thread::get_id()) return;  // exiting from the watchdog itself
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      if (stop_) return;
      const auto now = Clock::now();
      for (size_t i = 0; i < pending_.size();) {
        Watched& w = pending_[i];
        cudaSetDevice(w.device);
        const cudaError_t e = cudaEventQuery(w.done);
        if (e == cudaSuccess) {
          cudaEventDestroy(w.done);
          pending_.erase(pending_.begin() + std::ptrdiff_t(i));
          continue;
        }
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(w.comm, &async);
        if (e != cudaErrorNotReady || async != ncclSuccess || now > w.deadline) {
          const Watched failed = w;
          lock.unlock();  // the exit path runs atexit handlers, stop() among them
          std::fprintf(stderr, "megatron: error: %s %s; a peer rank died or hangs; aborting the job\n",
                       failed.what.c_str(),
                       e != cudaErrorNotReady ? cudaGetErrorString(e)
                       : async != ncclSuccess ? ncclGetErrorString(async)
                                              : "did not complete within --distributed-timeout-minutes");
          std::fflush(stderr);
          ncclCommAbort(failed.comm);
          abort_job(3);
        }
        ++i;
      }
      done_cv_.notify_all();
      if (!pending_.empty()) {
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        lock.lock();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<Watched> pending_;
  std::thread thread_;
  bool stop_ = false;
};

}  // namespace

void nccl_watch(cudaEvent_t done, int device, ncclComm_t comm, std::string what) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_seconds()));
  Watchdog::get().watch(Watched{done, device, comm, deadline, std::move(what)});
}

void nccl_unwatch(ncclComm_t comm) { Watchdog::get().unwatch(comm); }

}  // namespace mt::dist
#endif  // MT_WITH_NCCL
