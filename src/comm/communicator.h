#pragma once
// Communicator: collectives over a group of ranks (Megatron/torch.distributed's process group).
// One interface, one implementation per backend: MpiCommunicator (host tensors; device
// tensors are staged through host memory in a build without NCCL), SelfCommunicator (a group
// of one, no MPI needed), NcclCommunicator (device tensors, enqueued on streams).
//
// Semantics, all backends:
//  - Tensors are contiguous; every rank passes the same dtype and numel.
//  - Sum reductions are deterministic and identical on every rank: chunk i is summed by one
//    owner in rank order 0..size-1 (fp32 accumulation for bf16/fp16), then distributed. So a
//    replicated value stays bit-identical across the ranks that reduce it.
//  - A collective that does not complete within the group's timeout (a peer died or hangs)
//    prints which rank waited on what and aborts the whole job (MPI_Abort).
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mt {

enum class ReduceOp { Sum, Max };

// One point-to-point transfer of a batch (Megatron's P2POp for batch_isend_irecv).
struct P2POp {
  enum class Kind { Send, Recv };
  Kind kind;
  Tensor tensor;  // contiguous; a Recv writes it
  int peer;       // rank in the group
};

// A collective started by one of the *_async calls. wait() orders what the caller does next
// after the collective: on the device, later work on the compute stream waits for it (the host
// does not block); on the host, it returns once the result is in place. The tensors must stay
// alive and untouched until wait() (the flat grad/param buffers are).
class CommHandle {
 public:
  virtual ~CommHandle() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name ("tp", "dp", "world", ...) and its members' world ranks, for messages.
  virtual const std::string& name() const = 0;
  virtual const std::vector<int>& world_ranks() const = 0;

  // t = op over ranks of t, in place.
  virtual void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // in: size() * n elements; out: n elements = op over ranks of chunk rank() of in.
  virtual void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::Sum) = 0;
  // in: n elements; out: size() * n, chunk r = rank r's in.
  virtual void all_gather(const Tensor& in, const Tensor& out) = 0;
  virtual void broadcast(const Tensor& t, int root) = 0;
  // in: n elements on every rank; out (n elements, read only on root) = op over ranks of in.
  // Default: an all_reduce of a copy (so the same sums as all_reduce, bit for bit).
  virtual void reduce(const Tensor& in, const Tensor& out, int root, ReduceOp op = ReduceOp::Sum);
  virtual void send(const Tensor& t, int dst) = 0;
  virtual void recv(const Tensor& t, int src) = 0;
  // in, out: size() * n elements; chunk r of in goes to rank r, chunk r of out comes from rank r.
  virtual void all_to_all(const Tensor& in, const Tensor& out) = 0;
  // Variable chunks (the expert-parallel token exchange): chunk r of in (send_counts[r] elements,
  // chunks back to back in rank order) goes to rank r; chunk r of out (recv_counts[r] elements)
  // comes from rank r. Every rank's send_counts[r] equals rank r's recv_counts[rank()] (the
  // caller exchanges the counts first).
  virtual void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                            const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;
  // Posts every send and receive of `ops` at once (Megatron's batch_isend_irecv; NCCL: one
  // group, on the side stream) and returns; the handle's wait() completes them all (on the
  // device: later compute-stream work waits for them). The two directions of a pipeline step
  // go out together, so neighbours that send to each other do not wait on each other. Messages
  // between two ranks are matched in the order each side posts them. The tensors must stay alive
  // until wait(). A transfer that does not complete within the timeout aborts the job naming
  // the peer, as the collectives do.
  virtual std::unique_ptr<CommHandle> batch_send_recv(const std::vector<P2POp>& ops) = 0;

  // The same collectives, started without waiting (data-parallel and tensor-parallel overlap). Backends that cannot
  // overlap run them synchronously and return a finished handle; the results are identical.
  virtual std::unique_ptr<CommHandle> all_reduce_async(const Tensor& t, ReduceOp op = ReduceOp::Sum);
  virtual std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, const Tensor& out,
                                                           ReduceOp op = ReduceOp::Sum);
  virtual std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, const Tensor& out);
  virtual std::unique_ptr<CommHandle> broadcast_async(const Tensor& t, int root);
  virtual std::unique_ptr<CommHandle> reduce_async(const Tensor& in, const Tensor& out, int root,
                                                   ReduceOp op = ReduceOp::Sum);

  // Sub-groups (MPI_Comm_split): ranks with equal color form a group ordered by key; color < 0
  // leaves this rank out (returns null). Collective over this group.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // Host doubles (losses, norms, counters), reduced in fp64 in rank order, identical on every rank.
  virtual void all_reduce_f64(double* v, int n, ReduceOp op = ReduceOp::Sum) = 0;
  double all_reduce_scalar(double v, ReduceOp op = ReduceOp::Sum) {
    all_reduce_f64(&v, 1, op);
    return v;
  }
};

// A group of one rank: every collective is a copy or nothing. Needs no MPI.
class SelfCommunicator final : public Communicator {
 public:
  SelfCommunicator(std::string name, int world_rank = 0) : name_(std::move(name)), ranks_{world_rank} {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }
  void all_reduce(const Tensor&, ReduceOp) override {}
  void all_reduce_f64(double*, int, ReduceOp) override {}
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp) override;
  void all_gather(const Tensor& in, const Tensor& out) override;
  void broadcast(const Tensor&, int) override {}
  void send(const Tensor&, int) override;
  void recv(const Tensor&, int) override;
  void all_to_all(const Tensor& in, const Tensor& out) override;
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override;
  void barrier() override {}
  std::unique_ptr<CommHandle> batch_send_recv(const std::vector<P2POp>& ops) override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  std::string name_;
  std::vector<int> ranks_;
};

}  // namespace mt
