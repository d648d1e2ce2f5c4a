#include "comm/mpi_communicator.h"

#include <mpi.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "comm/comm_timer.h"

namespace mt::dist {
namespace {

double g_timeout_s = 600.0;  // Megatron's --distributed-timeout-minutes default is 10

#define MT_MPI(call)                                                                       \
  do {                                                                                     \
    int mt_rc_ = (call);                                                                   \
    if (mt_rc_ != MPI_SUCCESS) {                                                           \
      char mt_msg_[MPI_MAX_ERROR_STRING];                                                  \
      int mt_len_ = 0;                                                                     \
      MPI_Error_string(mt_rc_, mt_msg_, &mt_len_);                                         \
      MT_CHECK(false, "{} failed: {}", #call, std::string(mt_msg_, size_t(mt_len_)));      \
    }                                                                                      \
  } while (0)

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::BF16:
    case DType::F16:
    case DType::U16: return MPI_UINT16_T;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
  }
  return MPI_BYTE;
}

int mpi_count(int64_t n) {
  MT_CHECK(n >= 0 && n <= INT_MAX, "MPI message of {} elements is too large for one call", n);
  return int(n);
}

// Elementwise `acc op= x` for n elements of dtype t, accumulating in acc (fp32 for floats,
// the integer type for ints).
template <class Acc, class T, class Load>
void accumulate(Acc* acc, const T* x, int64_t n, ReduceOp op, Load load) {
  if (op == ReduceOp::Sum)
    for (int64_t i = 0; i < n; ++i) acc[i] += load(x[i]);
  else
    for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], Acc(load(x[i])));
}

// out[i] = op over r of chunks[r * n + i] (r = 0..size-1 in order), in out's dtype.
void reduce_chunks(const void* chunks, int size, int64_t n, DType t, ReduceOp op, void* out) {
  auto run = [&](auto acc_tag, auto elem_tag, auto load, auto store) {
    using Acc = decltype(acc_tag);
    using T = decltype(elem_tag);
    const T* c = static_cast<const T*>(chunks);
    std::vector<Acc> acc(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) acc[size_t(i)] = load(c[i]);
    for (int r = 1; r < size; ++r) accumulate(acc.data(), c + int64_t(r) * n, n, op, load);
    T* o = static_cast<T*>(out);
    for (int64_t i = 0; i < n; ++i) o[i] = store(acc[size_t(i)]);
  };
  switch (t) {
    case DType::F32:
      run(0.0f, 0.0f, [](float x) { return x; }, [](float x) { return x; });
      break;
    case DType::BF16:
      run(0.0f, bf16{}, [](bf16 x) { return to_f32(x); }, [](float x) { return to_bf16(x); });
      break;
    case DType::F16:
      run(0.0f, f16{}, [](f16 x) { return to_f32(x); }, [](float x) { return to_f16(x); });
      break;
    case DType::I32:
      run(int32_t(0), int32_t(0), [](int32_t x) { return x; }, [](int32_t x) { return x; });
      break;
    case DType::I64:
      run(int64_t(0), int64_t(0), [](int64_t x) { return x; }, [](int64_t x) { return x; });
      break;
    case DType::U16:
      run(uint32_t(0), uint16_t(0), [](uint16_t x) { return uint32_t(x); }, [](uint32_t x) { return uint16_t(x); });
      break;
  }
}

// A host view of t: t itself on the CPU, else a staged copy (written back by finish()).
struct HostStage {
  Tensor dev, host;
  explicit HostStage(const Tensor& t, bool copy_in = true) : dev(t) {
    MT_CHECK(t.defined() && t.is_contiguous(), "communicator: tensor must be defined and contiguous: {}", t.str());
    if (t.device().is_cpu()) {
      host = t;
    } else {
      host = copy_in ? t.to(Device::cpu()) : Tensor::empty(t.shape(), t.dtype(), Device::cpu());
    }
  }
  void finish() const {
    if (!dev.device().is_cpu()) dev.copy_from(host);
  }
};

// Adds the scope's wall time to the group's communication time when timing is on.
class ScopedCommTime {
 public:
  explicit ScopedCommTime(const std::string& group) : group_(comm_timing() ? &group : nullptr) {
    if (group_) t0_ = std::chrono::steady_clock::now();
  }
  ~ScopedCommTime() {
    if (group_) comm_time_add(*group_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }

 private:
  const std::string* group_;
  std::chrono::steady_clock::time_point t0_;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name, bool owned) : comm_(comm), name_(std::move(name)), owned_(owned) {
    MT_MPI(MPI_Comm_rank(comm_, &rank_));
    MT_MPI(MPI_Comm_size(comm_, &size_));
    std::vector<int> mine{world_rank()};
    ranks_.resize(size_t(size_));
    MT_MPI(MPI_Allgather(mine.data(), 1, MPI_INT, ranks_.data(), 1, MPI_INT, comm_));
  }
  ~MpiCommunicator() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (owned_ && !fin) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    if (size_ == 1) return;
    ScopedCommTime timed(name_);
    HostStage st(t);
    const int64_t n = t.numel(), chunk = (n + size_ - 1) / size_;
    const size_t es = dtype_size(t.dtype());
    // Pad to size * chunk so every rank owns an equal chunk.
    Tensor padded = Tensor::zeros({chunk * size_}, t.dtype());
    std::memcpy(padded.raw(), st.host.raw(), size_t(n) * es);
    Tensor mine = Tensor::empty({chunk}, t.dtype());
    reduce_scatter_host(padded, mine, op, "all_reduce");
    all_gather_host(mine, padded, "all_reduce");
    std::memcpy(st.host.raw(), padded.raw(), size_t(n) * es);
    st.finish();
  }

  void all_reduce_f64(double* v, int n, ReduceOp op) override {
    if (size_ == 1) return;
    std::vector<double> all(size_t(n) * size_t(size_));
    MPI_Request req;
    MT_MPI(MPI_Iallgather(v, n, MPI_DOUBLE, all.data(), n, MPI_DOUBLE, comm_, &req));
    wait(req, "all_reduce_f64");
    for (int i = 0; i < n; ++i) {
      double acc = all[size_t(i)];
      for (int r = 1; r < size_; ++r) {
        double x = all[size_t(r) * size_t(n) + size_t(i)];
        acc = op == ReduceOp::Sum ? acc + x : std::max(acc, x);
      }
      v[i] = acc;
    }
  }

  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    MT_CHECK(in.numel() == out.numel() * size_ && in.dtype() == out.dtype(), "reduce_scatter on {}: in {} / out {}",
             name_, in.str(), out.str());
    ScopedCommTime timed(name_);
    HostStage si(in), so(out, false);
    reduce_scatter_host(si.host, so.host, op, "reduce_scatter");
    so.finish();
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    MT_CHECK(out.numel() == in.numel() * size_ && in.dtype() == out.dtype(), "all_gather on {}: in {} / out {}", name_,
             in.str(), out.str());
    ScopedCommTime timed(name_);
    HostStage si(in), so(out, false);
    all_gather_host(si.host, so.host, "all_gather");
    so.finish();
  }

  void broadcast(const Tensor& t, int root) override {
    if (size_ == 1) return;
    HostStage st(t);
    MPI_Request req;
    MT_MPI(MPI_Ibcast(st.host.raw(), mpi_count(t.numel()), mpi_type(t.dtype()), root, comm_, &req));
    wait(req, "broadcast");
    st.finish();
  }

  void send(const Tensor& t, int dst) override {
    HostStage st(t);
    MPI_Request req;
    MT_MPI(MPI_Isend(st.host.raw(), mpi_count(t.numel()), mpi_type(t.dtype()), dst, 0, comm_, &req));
    wait(req, "send");
  }

  void recv(const Tensor& t, int src) override {
    HostStage st(t, false);
    MPI_Request req;
    MT_MPI(MPI_Irecv(st.host.raw(), mpi_count(t.numel()), mpi_type(t.dtype()), src, 0, comm_, &req));
    wait(req, "recv");
    st.finish();
  }

  // The posted transfers of one batch; wait() completes them (receives copied back to the device
  // when staged).
  class P2PHandle final : public CommHandle {
   public:
    P2PHandle(MpiCommunicator& c, std::vector<P2POp> ops) : c_(c), ops_(std::move(ops)) {}
    void post() {
      stages_.reserve(ops_.size());
      reqs_.resize(ops_.size());
      for (size_t i = 0; i < ops_.size(); ++i) {
        const P2POp& op = ops_[i];
        MT_CHECK(op.peer >= 0 && op.peer < c_.size_ && op.peer != c_.rank_, "{} group: point-to-point peer {} of {} ranks",
                 c_.name_, op.peer, c_.size_);
        const bool send = op.kind == P2POp::Kind::Send;
        stages_.emplace_back(op.tensor, send);
        void* buf = stages_.back().host.raw();
        const int n = mpi_count(op.tensor.numel());
        // Tag 1: pipeline transfers never match the blocking send/recv (tag 0).
        if (send)
          MT_MPI(MPI_Isend(buf, n, mpi_type(op.tensor.dtype()), op.peer, 1, c_.comm_, &reqs_[i]));
        else
          MT_MPI(MPI_Irecv(buf, n, mpi_type(op.tensor.dtype()), op.peer, 1, c_.comm_, &reqs_[i]));
      }
    }
    void wait() override {
      ScopedCommTime timed(c_.name_);
      for (size_t i = 0; i < ops_.size(); ++i) {
        const bool send = ops_[i].kind == P2POp::Kind::Send;
        c_.wait(reqs_[i], send ? "pipeline send" : "pipeline recv", ops_[i].peer);
        if (!send) stages_[i].finish();
      }
      ops_.clear();
    }
    ~P2PHandle() override {
      if (!ops_.empty()) wait();
    }

   private:
    MpiCommunicator& c_;
    std::vector<P2POp> ops_;
    std::vector<HostStage> stages_;
    std::vector<MPI_Request> reqs_;
  };

  std::unique_ptr<CommHandle> batch_send_recv(const std::vector<P2POp>& ops) override {
    auto h = std::make_unique<P2PHandle>(*this, ops);
    h->post();
    return h;
  }

  void all_to_all(const Tensor& in, const Tensor& out) override {
    MT_CHECK(in.numel() == out.numel() && in.numel() % size_ == 0 && in.dtype() == out.dtype(),
             "all_to_all on {}: in {} / out {}", name_, in.str(), out.str());
    HostStage si(in), so(out, false);
    MPI_Request req;
    const int c = mpi_count(in.numel() / size_);
    MT_MPI(MPI_Ialltoall(si.host.raw(), c, mpi_type(in.dtype()), so.host.raw(), c, mpi_type(in.dtype()), comm_, &req));
    wait(req, "all_to_all");
    so.finish();
  }

  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override {
    MT_CHECK(in.dtype() == out.dtype() && int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
             "all_to_all_v on {}: in {} / out {}", name_, in.str(), out.str());
    const size_t n = size_t(size_);
    std::vector<int> sc(n), sd(n), rc(n), rd(n);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      sc[size_t(r)] = mpi_count(send_counts[size_t(r)]);
      sd[size_t(r)] = mpi_count(so);
      rc[size_t(r)] = mpi_count(recv_counts[size_t(r)]);
      rd[size_t(r)] = mpi_count(ro);
      so += send_counts[size_t(r)];
      ro += recv_counts[size_t(r)];
    }
    MT_CHECK(so <= in.numel() && ro <= out.numel(), "all_to_all_v on {}: {} / {} elements for in {} / out {}", name_,
             so, ro, in.str(), out.str());
    HostStage si(in), st(out, false);
    MPI_Request req;
    MT_MPI(MPI_Ialltoallv(si.host.raw(), sc.data(), sd.data(), mpi_type(in.dtype()), st.host.raw(), rc.data(), rd.data(),
                          mpi_type(in.dtype()), comm_, &req));
    wait(req, "all_to_all_v");
    st.finish();
  }

  void barrier() override {
    MPI_Request req;
    MT_MPI(MPI_Ibarrier(comm_, &req));
    wait(req, "barrier");
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    MPI_Comm c;
    MT_MPI(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &c));
    if (c == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCommunicator>(c, name, true);
  }

 private:
  void reduce_scatter_host(const Tensor& in, const Tensor& out, ReduceOp op, const char* what) {
    const int64_t n = out.numel();
    if (size_ == 1) {
      if (in.raw() != out.raw()) std::memcpy(out.raw(), in.raw(), out.nbytes());
      return;
    }
    Tensor chunks = Tensor::empty({n * size_}, in.dtype());
    MPI_Request req;
    const int c = mpi_count(n);
    MT_MPI(MPI_Ialltoall(in.raw(), c, mpi_type(in.dtype()), chunks.raw(), c, mpi_type(in.dtype()), comm_, &req));
    wait(req, what);
    reduce_chunks(chunks.raw(), size_, n, in.dtype(), op, out.raw());
  }

  void all_gather_host(const Tensor& in, const Tensor& out, const char* what) {
    MPI_Request req;
    const int c = mpi_count(in.numel());
    const char* own = static_cast<const char*>(out.raw()) + size_t(rank_) * in.nbytes();
    const char* lo = static_cast<const char*>(out.raw());
    const char* src = static_cast<const char*>(in.raw());
    Tensor copy;
    const void* send = in.raw();
    if (src == own) {
      send = MPI_IN_PLACE;  // the distributed optimizer gathers shards that live inside the bucket
    } else if (src + in.nbytes() > lo && src < lo + out.nbytes()) {
      copy = Tensor::empty(in.shape(), in.dtype());
      std::memcpy(copy.raw(), in.raw(), in.nbytes());
      send = copy.raw();
    }
    MT_MPI(MPI_Iallgather(send, c, mpi_type(in.dtype()), out.raw(), c, mpi_type(in.dtype()), comm_, &req));
    wait(req, what);
  }

  // MPI_Wait with a deadline: spin, then yield, then sleep; past the timeout, abort the job.
  // peer >= 0: a point-to-point transfer with that group rank (the message names it alone).
  void wait(MPI_Request& req, const char* what, int peer = -1) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    int done = 0;
    for (int64_t polls = 0;; ++polls) {
      MT_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) return;
      if (polls < 1000) continue;
      if (polls < 20000) {
        sched_yield();
        continue;
      }
      if ((polls & 63) == 0 && std::chrono::duration<double>(Clock::now() - t0).count() > g_timeout_s) {
        std::string peers;
        for (int r : ranks_)
          if (r != world_rank()) peers += (peers.empty() ? "" : ",") + std::to_string(r);
        if (peer >= 0) peers = std::to_string(ranks_[size_t(peer)]);
        std::fprintf(stderr,
                     "megatron: error: rank %d: %s on the %s group did not complete within "
                     "--distributed-timeout-minutes (%.2f min): peer rank(s) %s died or hang; aborting the job\n",
                     world_rank(), what, name_.c_str(), g_timeout_s / 60.0, peers.c_str());
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
      }
      usleep(50);
    }
  }

  MPI_Comm comm_;
  std::string name_;
  bool owned_;
  int rank_ = 0, size_ = 1;
  std::vector<int> ranks_;
};

bool g_skip_finalize = false;

void finalize_at_exit() {
  int init = 0, fin = 0;
  if (g_skip_finalize) {
    // Leave together: a rank gone without MPI_Finalize is reported to the others as aborted, so
    // each leaves right after a barrier, past every message. (Reached from a normal return only:
    // error exits go through abort_job, which clears the flag.)
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) == MPI_SUCCESS) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int done = 0; !done && MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS;) {
        // Spin: the ranks then leave within microseconds of each other.
        if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > g_timeout_s) break;
      }
    }
    std::fflush(nullptr);
    _exit(0);
  }
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
}

}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

bool mpi_active() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

namespace {
int env_int(const char* name, int fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoi(s) : fallback;
}
bool slurm_task() { return std::getenv("SLURM_PROCID") != nullptr; }
int slurm_size() { return env_int("SLURM_STEP_NUM_TASKS", env_int("SLURM_NTASKS", 1)); }
}  // namespace

int launcher_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (std::getenv(v)) return env_int(v, 1);
  return slurm_task() ? slurm_size() : 1;
}

int local_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (std::getenv(v)) return env_int(v, 0);
  return 0;
}

const char* launcher_name() {
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) return "mpirun";
  if (slurm_task()) return "srun";
  return launched_by_mpi() ? "MPI" : "none";
}

void check_launch() {
  if (world_size() > 1 || !slurm_task() || slurm_size() <= 1) return;
  MT_USER_ERROR("Slurm started this process as task {} of {} (SLURM_PROCID, SLURM_NTASKS) but MPI sees a world "
                "of 1: srun has no PMI here, so each task would train alone; launch with 'srun --mpi=pmix' (or "
                "pmi2: see 'srun --mpi=list'), or with mpirun",
                env_int("SLURM_PROCID", 0), slurm_size());
}

bool init(bool force) {
  if (mpi_active()) return true;
  if (!force && !launched_by_mpi()) return false;
  int provided = 0;
  MT_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  std::atexit(finalize_at_exit);
  return true;
}

int world_rank() {
  if (!mpi_active()) return 0;
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  if (!mpi_active()) return 1;
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

void skip_finalize_at_exit() { g_skip_finalize = true; }

void set_timeout_seconds(double s) { g_timeout_s = s; }
double timeout_seconds() { return g_timeout_s; }

namespace {

// Every rank reports to rank 0, which answers once all have: a rank that does not arrive within the
// timeout is named by rank 0, which aborts the job (the others wait longer, so rank 0 speaks first;
// if rank 0 is the one missing, they name it). Without this, the first collective would wait forever.
// Test hook: MEGATRON_TEST_STALL_RANK=N stops rank N (SIGSTOP) just before it.
void startup_rendezvous() {
  static bool done = false;
  if (done) return;
  done = true;
  int r = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  if (n == 1) return;
  if (const char* s = std::getenv("MEGATRON_TEST_STALL_RANK"); s && std::atoi(s) == r) raise(SIGSTOP);
  constexpr int kArrive = 0x5e71, kGo = 0x5e72;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  int token = r, go = 1;
  if (r == 0) {
    std::vector<int> got(size_t(n), 0);
    std::vector<MPI_Request> reqs(size_t(n - 1));
    for (int i = 1; i < n; ++i) MT_MPI(MPI_Irecv(&got[size_t(i)], 1, MPI_INT, i, kArrive, MPI_COMM_WORLD, &reqs[size_t(i - 1)]));
    for (int all = 0;;) {
      MT_MPI(MPI_Testall(n - 1, reqs.data(), &all, MPI_STATUSES_IGNORE));
      if (all) break;
      if (elapsed() > g_timeout_s) {
        std::string missing;
        for (int i = 1; i < n; ++i) {
          int d = 0;
          MPI_Test(&reqs[size_t(i - 1)], &d, MPI_STATUS_IGNORE);
          if (!d) missing += (missing.empty() ? "" : ",") + std::to_string(i);
        }
        std::fprintf(stderr,
                     "megatron: error: rank(s) %s did not arrive at start-up within --distributed-timeout-minutes "
                     "(%.2f min): stopped, hung or not started; aborting the job\n",
                     missing.c_str(), g_timeout_s / 60.0);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
      }
      usleep(1000);
    }
    std::vector<MPI_Request> sends(size_t(n - 1));
    for (int i = 1; i < n; ++i) MT_MPI(MPI_Isend(&go, 1, MPI_INT, i, kGo, MPI_COMM_WORLD, &sends[size_t(i - 1)]));
    MT_MPI(MPI_Waitall(n - 1, sends.data(), MPI_STATUSES_IGNORE));
    return;
  }
  MPI_Request reqs[2];
  MT_MPI(MPI_Isend(&token, 1, MPI_INT, 0, kArrive, MPI_COMM_WORLD, &reqs[0]));
  MT_MPI(MPI_Irecv(&go, 1, MPI_INT, 0, kGo, MPI_COMM_WORLD, &reqs[1]));
  for (int all = 0;;) {
    MT_MPI(MPI_Testall(2, reqs, &all, MPI_STATUSES_IGNORE));
    if (all) return;
    if (elapsed() > 1.5 * g_timeout_s + 5.0) {
      std::fprintf(stderr,
                   "megatron: error: rank %d: rank 0 did not complete start-up within --distributed-timeout-minutes "
                   "(%.2f min): stopped, hung or not started; aborting the job\n",
                   r, g_timeout_s / 60.0);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    usleep(1000);
  }
}

}  // namespace

std::unique_ptr<Communicator> world() {
  if (!mpi_active()) return std::make_unique<SelfCommunicator>("world");
  startup_rendezvous();
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", false);
}

std::unique_ptr<Communicator> self(const std::string& name) {
  return std::make_unique<SelfCommunicator>(name, world_rank());
}

void abort_job(int code) {
  g_skip_finalize = false;
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_active() && world_size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace mt::dist
