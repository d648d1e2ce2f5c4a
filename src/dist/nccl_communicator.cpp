#include "dist/nccl_communicator.h"

#include "core/error.h"
#include "dist/mpi_communicator.h"

#ifdef MT_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
  void all_reduce_f64(double* v, int n, ReduceOp op) override { host_->all_reduce_f64(v, n, op); }
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override { pick(in).reduce_scatter(in, out, op); }
  void all_gather(const Tensor& in, const Tensor& out) override { pick(in).all_gather(in, out); }
  void broadcast(const Tensor& t, int root) override { pick(t).broadcast(t, root); }
  void send(const Tensor& t, int dst) override { pick(t).send(t, dst); }
  void recv(const Tensor& t, int src) override { pick(t).recv(t, src); }
  void all_to_all(const Tensor& in, const Tensor& out) override { pick(in).all_to_all(in, out); }
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

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, std::string name, std::vector<int> world_ranks)
      : comm_(comm), name_(std::move(name)), ranks_(std::move(world_ranks)) {
    MT_NCCL(ncclCommUserRank(comm_, &rank_));
    MT_NCCL(ncclCommCount(comm_, &size_));
    MT_CUDART(cudaGetDevice(&device_));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce");
    MT_NCCL(ncclAllReduce(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype()), nccl_op(op), comm_, stream()));
    wait("all_reduce");
  }
  void all_reduce_f64(double* v, int n, ReduceOp op) override {
    double* d = nullptr;
    MT_CUDART(cudaMalloc(&d, sizeof(double) * size_t(n)));
    MT_CUDART(cudaMemcpy(d, v, sizeof(double) * size_t(n), cudaMemcpyHostToDevice));
    MT_NCCL(ncclAllReduce(d, d, size_t(n), ncclFloat64, nccl_op(op), comm_, stream()));
    wait("all_reduce_f64");
    MT_CUDART(cudaMemcpy(v, d, sizeof(double) * size_t(n), cudaMemcpyDeviceToHost));
    MT_CUDART(cudaFree(d));
  }
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check(in, "reduce_scatter");
    check(out, "reduce_scatter");
    MT_CHECK(in.numel() == out.numel() * size_, "reduce_scatter on {}: in {} / out {}", name_, in.str(), out.str());
    MT_NCCL(ncclReduceScatter(in.raw(), out.raw(), size_t(out.numel()), nccl_type(in.dtype()), nccl_op(op), comm_,
                              stream()));
    wait("reduce_scatter");
  }
  void all_gather(const Tensor& in, const Tensor& out) override {
    check(in, "all_gather");
    check(out, "all_gather");
    MT_CHECK(out.numel() == in.numel() * size_, "all_gather on {}: in {} / out {}", name_, in.str(), out.str());
    // In place when in is out's own chunk (NCCL allows exactly that aliasing).
    MT_NCCL(ncclAllGather(in.raw(), out.raw(), in.nbytes(), ncclUint8, comm_, stream()));
    wait("all_gather");
  }
  void broadcast(const Tensor& t, int root) override {
    check(t, "broadcast");
    MT_NCCL(ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, stream()));
    wait("broadcast");
  }
  void send(const Tensor& t, int dst) override {
    check(t, "send");
    MT_NCCL(ncclSend(t.raw(), t.nbytes(), ncclUint8, dst, comm_, stream()));
    wait("send");
  }
  void recv(const Tensor& t, int src) override {
    check(t, "recv");
    MT_NCCL(ncclRecv(t.raw(), t.nbytes(), ncclUint8, src, comm_, stream()));
    wait("recv");
  }
  void all_to_all(const Tensor& in, const Tensor& out) override {
    check(in, "all_to_all");
    check(out, "all_to_all");
    MT_CHECK(in.numel() == out.numel() && in.numel() % size_ == 0, "all_to_all on {}: in {} / out {}", name_,
             in.str(), out.str());
    const size_t chunk = in.nbytes() / size_t(size_);
    MT_NCCL(ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      MT_NCCL(ncclSend(static_cast<const char*>(in.raw()) + r * chunk, chunk, ncclUint8, r, comm_, stream()));
      MT_NCCL(ncclRecv(static_cast<char*>(out.raw()) + r * chunk, chunk, ncclUint8, r, comm_, stream()));
    }
    MT_NCCL(ncclGroupEnd());
    wait("all_to_all");
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
  static ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : ncclMax; }
  static cudaStream_t stream() { return nullptr; }  // the default stream, as the kernels use
  void check(const Tensor& t, const char* what) const {
    MT_CHECK(t.defined() && t.is_contiguous() && t.is_cuda(), "NCCL {} on {}: needs a contiguous CUDA tensor, got {}",
             what, name_, t.str());
  }
  // Blocks until the stream has finished the collective, or aborts the job past the deadline.
  void wait(const char* what) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    for (int64_t polls = 0;; ++polls) {
      cudaError_t e = cudaStreamQuery(stream());
      if (e == cudaSuccess) return;
      MT_CHECK(e == cudaErrorNotReady, "NCCL {} on {}: {}", what, name_, cudaGetErrorString(e));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      const bool late = std::chrono::duration<double>(Clock::now() - t0).count() > timeout_seconds();
      if (async != ncclSuccess || late) {
        std::fprintf(stderr,
                     "megatron: error: rank %d: NCCL %s on the %s group %s; a peer rank died or hangs; aborting the "
                     "job\n",
                     world_rank(), what, name_.c_str(),
                     late ? "did not complete within --distributed-timeout-minutes" : ncclGetErrorString(async));
        std::fflush(stderr);
        ncclCommAbort(comm_);
        comm_ = nullptr;
        abort_job(3);
      }
      if (polls > 1000) usleep(20);
    }
  }

  ncclComm_t comm_;
  std::string name_;
  std::vector<int> ranks_;
  int rank_ = 0, size_ = 1, device_ = 0;
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
