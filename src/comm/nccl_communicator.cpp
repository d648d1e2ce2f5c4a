#include "comm/nccl_communicator.h"

#include "core/error.h"
#include "comm/comm_timer.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_watchdog.h"

#ifdef MT_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#endif

namespace mt::dist {
namespace {

class HybridCommunicator final : public Communicator {
 public:
  HybridCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
      : host_(std::move(host)), dev_(std::move(device)) {
    MT_CHECK(host_->size() == dev_->size() && host_->rank() == dev_->rank(),
             "hybrid communicator: host and device groups differ");
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::string& name() const override { return host_->name(); }
  const std::vector<int>& world_ranks() const override { return host_->world_ranks(); }
  void all_reduce(const Tensor& t, ReduceOp op) override { pick(t).all_reduce(t, op); }
  std::unique_ptr<CommHandle> all_reduce_async(const Tensor& t, ReduceOp op) override {
    return pick(t).all_reduce_async(t, op);
  }
  std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    return pick(in).reduce_scatter_async(in, out, op);
  }
  std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, const Tensor& out) override {
    return pick(in).all_gather_async(in, out);
  }
  void all_reduce_f64(double* v, int n, ReduceOp op) override { host_->all_reduce_f64(v, n, op); }
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override { pick(in).reduce_scatter(in, out, op); }
  void all_gather(const Tensor& in, const Tensor& out) override { pick(in).all_gather(in, out); }
  void broadcast(const Tensor& t, int root) override { pick(t).broadcast(t, root); }
  void send(const Tensor& t, int dst) override { pick(t).send(t, dst); }
  void recv(const Tensor& t, int src) override { pick(t).recv(t, src); }
  std::unique_ptr<CommHandle> batch_send_recv(const std::vector<P2POp>& ops) override {
    return ops.empty() ? host_->batch_send_recv(ops) : pick(ops.front().tensor).batch_send_recv(ops);
  }
  void all_to_all(const Tensor& in, const Tensor& out) override { pick(in).all_to_all(in, out); }
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override {
    pick(in).all_to_all_v(in, send_counts, out, recv_counts);
  }
  void barrier() override { host_->barrier(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    auto h = host_->split(color, key, name);
    auto d = dev_->split(color, key, name);
    if (!h) return nullptr;
    return std::make_unique<HybridCommunicator>(std::move(h), std::move(d));
  }

 private:
  Communicator& pick(const Tensor& t) { return t.is_cuda() ? *dev_ : *host_; }
  std::unique_ptr<Communicator> host_, dev_;
};

#ifdef MT_WITH_NCCL

#define MT_NCCL(call)                                                                      \
  do {                                                                                     \
    ncclResult_t mt_r_ = (call);                                                           \
    MT_CHECK(mt_r_ == ncclSuccess, "{} failed: {}", #call, ncclGetErrorString(mt_r_));    \
  } while (0)
#define MT_CUDART(call)                                                                    \
  do {                                                                                     \
    cudaError_t mt_e_ = (call);                                                            \
    MT_CHECK(mt_e_ == cudaSuccess, "{} failed: {}", #call, cudaGetErrorString(mt_e_));     \
  } while (0)

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U16: break;
  }
  MT_CHECK(false, "NCCL: no reduction type for {}", dtype_name(t));
  return ncclFloat32;
}

// A collective on the side stream: wait() makes the compute stream wait for it.
class NcclHandle final : public CommHandle {
 public:
  explicit NcclHandle(cudaEvent_t done) : done_(done) {}
  ~NcclHandle() override {
    if (done_) cudaEventDestroy(done_);
  }
  void wait() override {
    if (!done_) return;
    MT_CUDART(cudaStreamWaitEvent(nullptr, done_, 0));
    MT_CUDART(cudaEventDestroy(done_));
    done_ = nullptr;
  }

 private:
  cudaEvent_t done_;
};

cudaEvent_t new_event(bool timing = false) {
  cudaEvent_t e = nullptr;
  MT_CUDART(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, std::string name, std::vector<int> world_ranks)
      : comm_(comm), name_(std::move(name)), ranks_(std::move(world_ranks)) {
    MT_NCCL(ncclCommUserRank(comm_, &rank_));
    MT_NCCL(ncclCommCount(comm_, &size_));
    MT_CUDART(cudaGetDevice(&device_));
  }
  ~NcclCommunicator() override {
    if (!comm_) return;
    nccl_unwatch(comm_);
    if (side_) cudaStreamDestroy(side_);
    ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce");
    enqueue("all_reduce", kCompute, [&](cudaStream_t s) { return all_reduce_on(t, op, s); });
  }
  std::unique_ptr<CommHandle> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce");
    return enqueue_side("all_reduce", [&](cudaStream_t s) { return all_reduce_on(t, op, s); });
  }
  void all_reduce_f64(double* v, int n, ReduceOp op) override {
    Tensor d = Tensor::empty({int64_t(n)}, DType::I64, Device::cuda(device_));
    MT_CUDART(cudaMemcpy(d.raw(), v, sizeof(double) * size_t(n), cudaMemcpyHostToDevice));
    enqueue("all_reduce_f64", kCompute, [&](cudaStream_t s) {
      return ncclAllReduce(d.raw(), d.raw(), size_t(n), ncclFloat64, nccl_op(op), comm_, s);
    });
    MT_CUDART(cudaMemcpy(v, d.raw(), sizeof(double) * size_t(n), cudaMemcpyDeviceToHost));
  }
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_reduce_scatter(in, out);
    enqueue("reduce_scatter", kCompute, [&](cudaStream_t s) { return reduce_scatter_on(in, out, op, s); });
  }
  std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_reduce_scatter(in, out);
    return enqueue_side("reduce_scatter", [&](cudaStream_t s) { return reduce_scatter_on(in, out, op, s); });
  }
  void all_gather(const Tensor& in, const Tensor& out) override {
    check_all_gather(in, out);
    enqueue("all_gather", kCompute, [&](cudaStream_t s) { return all_gather_on(in, out, s); });
  }
  std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, const Tensor& out) override {
    check_all_gather(in, out);
    return enqueue_side("all_gather", [&](cudaStream_t s) { return all_gather_on(in, out, s); });
  }
  void broadcast(const Tensor& t, int root) override {
    check(t, "broadcast");
    enqueue("broadcast", kCompute, [&](cudaStream_t s) { return broadcast_on(t, root, s); });
  }
  void reduce(const Tensor& in, const Tensor& out, int root, ReduceOp op) override {
    check_reduce(in, out, root);
    enqueue("reduce", kCompute, [&](cudaStream_t s) { return reduce_on(in, out, root, op, s); });
  }
  std::unique_ptr<CommHandle> reduce_async(const Tensor& in, const Tensor& out, int root, ReduceOp op) override {
    check_reduce(in, out, root);
    return enqueue_side("reduce", [&](cudaStream_t s) { return reduce_on(in, out, root, op, s); });
  }
  std::unique_ptr<CommHandle> broadcast_async(const Tensor& t, int root) override {
    check(t, "broadcast");
    return enqueue_side("broadcast", [&](cudaStream_t s) { return broadcast_on(t, root, s); });
  }
  void send(const Tensor& t, int dst) override {
    check(t, "send");
    enqueue("send", kCompute, [&](cudaStream_t s) { return ncclSend(t.raw(), t.nbytes(), ncclUint8, dst, comm_, s); });
  }
  void recv(const Tensor& t, int src) override {
    check(t, "recv");
    enqueue("recv", kCompute, [&](cudaStream_t s) { return ncclRecv(t.raw(), t.nbytes(), ncclUint8, src, comm_, s); });
  }
  std::unique_ptr<CommHandle> batch_send_recv(const std::vector<P2POp>& ops) override {
    for (const P2POp& op : ops) check(op.tensor, op.kind == P2POp::Kind::Send ? "send" : "recv");
    return enqueue_side("batch_send_recv", [&](cudaStream_t s) {
      ncclResult_t r = ncclGroupStart();
      for (size_t i = 0; i < ops.size() && r == ncclSuccess; ++i) {
        const P2POp& op = ops[i];
        r = op.kind == P2POp::Kind::Send ? ncclSend(op.tensor.raw(), op.tensor.nbytes(), ncclUint8, op.peer, comm_, s)
                                         : ncclRecv(op.tensor.raw(), op.tensor.nbytes(), ncclUint8, op.peer, comm_, s);
      }
      ncclResult_t end = ncclGroupEnd();
      return r == ncclSuccess ? end : r;
    });
  }
  void all_to_all(const Tensor& in, const Tensor& out) override {
    check(in, "all_to_all");
    check(out, "all_to_all");
    MT_CHECK(in.numel() == out.numel() && in.numel() % size_ == 0, "all_to_all on {}: in {} / out {}", name_,
             in.str(), out.str());
    const size_t chunk = in.nbytes() / size_t(size_);
    enqueue("all_to_all", kCompute, [&](cudaStream_t s) {
      ncclResult_t r = ncclGroupStart();
      for (int p = 0; p < size_ && r == ncclSuccess; ++p) {
        r = ncclSend(static_cast<const char*>(in.raw()) + p * chunk, chunk, ncclUint8, p, comm_, s);
        if (r == ncclSuccess) r = ncclRecv(static_cast<char*>(out.raw()) + p * chunk, chunk, ncclUint8, p, comm_, s);
      }
      ncclResult_t end = ncclGroupEnd();
      return r == ncclSuccess ? end : r;
    });
  }
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override {
    check(in, "all_to_all_v");
    check(out, "all_to_all_v");
    MT_CHECK(in.dtype() == out.dtype() && int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
             "all_to_all_v on {}: in {} / out {}", name_, in.str(), out.str());
    const size_t es = dtype_size(in.dtype());
    enqueue("all_to_all_v", kCompute, [&](cudaStream_t s) {
      ncclResult_t r = ncclGroupStart();
      size_t so = 0, ro = 0;
      for (int p = 0; p < size_ && r == ncclSuccess; ++p) {
        const size_t sb = size_t(send_counts[size_t(p)]) * es, rb = size_t(recv_counts[size_t(p)]) * es;
        if (sb > 0) r = ncclSend(static_cast<const char*>(in.raw()) + so, sb, ncclUint8, p, comm_, s);
        if (r == ncclSuccess && rb > 0) r = ncclRecv(static_cast<char*>(out.raw()) + ro, rb, ncclUint8, p, comm_, s);
        so += sb;
        ro += rb;
      }
      ncclResult_t end = ncclGroupEnd();
      return r == ncclSuccess ? end : r;
    });
  }
  void barrier() override {
    double one = 1;
    all_reduce_f64(&one, 1, ReduceOp::Sum);
  }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    ncclComm_t c = nullptr;
    MT_NCCL(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &c, nullptr));
    if (!c) return nullptr;
    // The members' world ranks: gather (color, world rank) over this group.
    std::vector<double> mine{double(color), double(ranks_[size_t(rank_)]), double(key)};
    std::vector<double> all(size_t(size_) * 3, 0.0);
    for (int r = 0; r < size_; ++r)
      if (r == rank_) std::copy(mine.begin(), mine.end(), all.begin() + 3 * r);
    all_reduce_f64(all.data(), int(all.size()), ReduceOp::Sum);
    std::vector<std::pair<int, int>> members;  // (key, world rank) of my color
    for (int r = 0; r < size_; ++r)
      if (int(all[size_t(3 * r)]) == color) members.emplace_back(int(all[size_t(3 * r + 2)]), int(all[size_t(3 * r + 1)]));
    std::stable_sort(members.begin(), members.end(), [](auto a, auto b) { return a.first < b.first; });
    std::vector<int> wr;
    for (auto& m : members) wr.push_back(m.second);
    return std::make_unique<NcclCommunicator>(c, name, wr);
  }

 private:
  // The kernels' stream (the legacy default stream): collectives on it are ordered with the
  // computation around them and the host does not wait.
  static constexpr cudaStream_t kCompute = nullptr;
  static ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : ncclMax; }

  ncclResult_t all_reduce_on(const Tensor& t, ReduceOp op, cudaStream_t s) {
    return ncclAllReduce(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype()), nccl_op(op), comm_, s);
  }
  ncclResult_t reduce_scatter_on(const Tensor& in, const Tensor& out, ReduceOp op, cudaStream_t s) {
    return ncclReduceScatter(in.raw(), out.raw(), size_t(out.numel()), nccl_type(in.dtype()), nccl_op(op), comm_, s);
  }
  ncclResult_t reduce_on(const Tensor& in, const Tensor& out, int root, ReduceOp op, cudaStream_t s) {
    return ncclReduce(in.raw(), out.raw(), size_t(in.numel()), nccl_type(in.dtype()), nccl_op(op), root, comm_, s);
  }
  ncclResult_t broadcast_on(const Tensor& t, int root, cudaStream_t s) {
    return ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, s);
  }
  ncclResult_t all_gather_on(const Tensor& in, const Tensor& out, cudaStream_t s) {
    // In place when in is out's own chunk (NCCL allows exactly that aliasing).
    return ncclAllGather(in.raw(), out.raw(), in.nbytes(), ncclUint8, comm_, s);
  }

  void check(const Tensor& t, const char* what) const {
    MT_CHECK(t.defined() && t.is_contiguous() && t.is_cuda(), "NCCL {} on {}: needs a contiguous CUDA tensor, got {}",
             what, name_, t.str());
  }
  void check_reduce_scatter(const Tensor& in, const Tensor& out) const {
    check(in, "reduce_scatter");
    check(out, "reduce_scatter");
    MT_CHECK(in.numel() == out.numel() * size_, "reduce_scatter on {}: in {} / out {}", name_, in.str(), out.str());
  }
  void check_reduce(const Tensor& in, const Tensor& out, int root) const {
    check(in, "reduce");
    check(out, "reduce");
    MT_CHECK(in.numel() == out.numel() && in.dtype() == out.dtype() && root >= 0 && root < size_,
             "reduce on {}: in {} / out {}, root {}", name_, in.str(), out.str(), root);
  }
  void check_all_gather(const Tensor& in, const Tensor& out) const {
    check(in, "all_gather");
    check(out, "all_gather");
    MT_CHECK(out.numel() == in.numel() * size_, "all_gather on {}: in {} / out {}", name_, in.str(), out.str());
  }

  // Enqueues the collective on stream s and hands its completion to the watchdog (timed for
  // the communication report when timing is on). The host does not wait.
  template <class Fn>
  void enqueue(const char* what, cudaStream_t s, Fn&& fn) {
    cudaEvent_t t0 = nullptr;
    if (comm_timing()) {
      t0 = new_event(true);
      MT_CUDART(cudaEventRecord(t0, s));
    }
    const ncclResult_t r = fn(s);
    MT_CHECK(r == ncclSuccess, "NCCL {} on the {} group failed: {}", what, name_, ncclGetErrorString(r));
    if (t0) {
      cudaEvent_t t1 = new_event(true);
      MT_CUDART(cudaEventRecord(t1, s));
      comm_time_add_deferred(name_, [t0, t1] {
        float ms = 0;
        cudaEventSynchronize(t1);
        cudaEventElapsedTime(&ms, t0, t1);
        cudaEventDestroy(t0);
        cudaEventDestroy(t1);
        return double(ms) / 1e3;
      });
    }
    cudaEvent_t done = new_event();
    MT_CUDART(cudaEventRecord(done, s));
    nccl_watch(done, device_, comm_,
               fmt::format("rank {}: NCCL {} on the {} group", ranks_[size_t(rank_)], what, name_));
  }

  // On the side stream, after everything already enqueued on the compute stream.
  template <class Fn>
  std::unique_ptr<CommHandle> enqueue_side(const char* what, Fn&& fn) {
    if (!side_) {
      int lo = 0, hi = 0;
      MT_CUDART(cudaDeviceGetStreamPriorityRange(&lo, &hi));
      MT_CUDART(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking, hi));
    }
    cudaEvent_t ready = new_event();
    MT_CUDART(cudaEventRecord(ready, kCompute));
    MT_CUDART(cudaStreamWaitEvent(side_, ready, 0));
    MT_CUDART(cudaEventDestroy(ready));  // released once it has completed
    enqueue(what, side_, fn);
    cudaEvent_t done = new_event();
    MT_CUDART(cudaEventRecord(done, side_));
    return std::make_unique<NcclHandle>(done);
  }

  ncclComm_t comm_;
  std::string name_;
  std::vector<int> ranks_;
  int rank_ = 0, size_ = 1, device_ = 0;
  cudaStream_t side_ = nullptr;
};

#endif  // MT_WITH_NCCL

}  // namespace

std::unique_ptr<Communicator> hybrid_communicator(std::unique_ptr<Communicator> host,
                                                  std::unique_ptr<Communicator> device) {
  return std::make_unique<HybridCommunicator>(std::move(host), std::move(device));
}

#ifdef MT_WITH_NCCL

bool nccl_available() { return true; }

std::unique_ptr<Communicator> nccl_communicator(Communicator& bootstrap, const std::string& name, int device) {
  MT_CUDART(cudaSetDevice(device));
  ncclUniqueId id;
  static_assert(sizeof(id) % 4 == 0);
  Tensor t = Tensor::empty({int64_t(sizeof(id) / 4)}, DType::I32);
  if (bootstrap.rank() == 0) {
    MT_NCCL(ncclGetUniqueId(&id));
    std::memcpy(t.raw(), &id, sizeof(id));
  }
  bootstrap.broadcast(t, 0);
  std::memcpy(&id, t.raw(), sizeof(id));
  ncclComm_t c;
  MT_NCCL(ncclCommInitRank(&c, bootstrap.size(), id, bootstrap.rank()));
  return std::make_unique<NcclCommunicator>(c, name, bootstrap.world_ranks());
}

std::vector<std::unique_ptr<Communicator>> nccl_communicators_for_devices(const std::vector<int>& devices) {
  std::vector<ncclComm_t> comms(devices.size());
  MT_NCCL(ncclCommInitAll(comms.data(), int(devices.size()), devices.data()));
  std::vector<int> ranks(devices.size());
  for (size_t i = 0; i < ranks.size(); ++i) ranks[i] = int(i);
  std::vector<std::unique_ptr<Communicator>> out;
  int saved = 0;
  MT_CUDART(cudaGetDevice(&saved));
  for (size_t i = 0; i < devices.size(); ++i) {
    MT_CUDART(cudaSetDevice(devices[i]));
    out.push_back(std::make_unique<NcclCommunicator>(comms[i], "nccl", ranks));
  }
  MT_CUDART(cudaSetDevice(saved));
  return out;
}

#else

bool nccl_available() { return false; }

std::unique_ptr<Communicator> nccl_communicator(Communicator&, const std::string&, int) {
  MT_CHECK(false, "this build has no NCCL backend");
  return nullptr;
}

std::vector<std::unique_ptr<Communicator>> nccl_communicators_for_devices(const std::vector<int>&) {
  MT_CHECK(false, "this build has no NCCL backend");
  return {};
}

#endif

}  // namespace mt::dist
