#pragma once
// A communicator of several ranks that never talks, for specifications of *when* a component
// communicates: every collective appends "op <describe(tensor)>" to `log` and leaves the data
// alone; the *_async ones return a handle whose wait() appends "wait op <describe(tensor)>",
// describing the tensor again at that moment. `describe` is the test's (offsets, a probe...).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace mt::testing {

class RecordingComm final : public Communicator {
 public:
  std::vector<std::string> log;
  std::function<std::string(const Tensor&)> describe = [](const Tensor&) { return std::string(); };
  int my_rank = 0;

  explicit RecordingComm(std::string name = "dp", int size = 2) : name_(std::move(name)) {
    for (int r = 0; r < size; ++r) ranks_.push_back(r);
  }
  int rank() const override { return my_rank; }
  int size() const override { return int(ranks_.size()); }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }
  void all_reduce(const Tensor& t, ReduceOp) override { record("all_reduce", t); }
  void all_reduce_f64(double*, int, ReduceOp) override {}
  void reduce_scatter(const Tensor& in, const Tensor&, ReduceOp) override { record("reduce_scatter", in); }
  void all_gather(const Tensor&, const Tensor& out) override { record("all_gather", out); }
  void broadcast(const Tensor& t, int) override { record("broadcast", t); }
  void reduce(const Tensor& in, const Tensor&, int root, ReduceOp) override {
    record("reduce to " + std::to_string(root), in);
  }
  void send(const Tensor&, int) override {}
  void recv(const Tensor&, int) override {}
  std::unique_ptr<CommHandle> batch_send_recv(const std::vector<P2POp>&) override {
    struct Done final : CommHandle {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  void all_to_all(const Tensor&, const Tensor&) override {}
  void all_to_all_v(const Tensor&, const std::vector<int64_t>&, const Tensor&, const std::vector<int64_t>&) override {}
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int, const std::string&) override { return nullptr; }

  std::unique_ptr<CommHandle> all_reduce_async(const Tensor& t, ReduceOp op) override {
    all_reduce(t, op);
    return std::make_unique<Handle>(this, "all_reduce", t);
  }
  std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    reduce_scatter(in, out, op);
    return std::make_unique<Handle>(this, "reduce_scatter", in);
  }
  std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, const Tensor& out) override {
    all_gather(in, out);
    return std::make_unique<Handle>(this, "all_gather", out);
  }
  std::unique_ptr<CommHandle> reduce_async(const Tensor& in, const Tensor& out, int root, ReduceOp op) override {
    reduce(in, out, root, op);
    return std::make_unique<Handle>(this, "reduce to " + std::to_string(root), in);
  }
  std::unique_ptr<CommHandle> broadcast_async(const Tensor& t, int root) override {
    broadcast(t, root);
    return std::make_unique<Handle>(this, "broadcast", t);
  }

 private:
  struct Handle final : CommHandle {
    RecordingComm* c;
    std::string op;
    Tensor t;
    Handle(RecordingComm* comm, std::string o, Tensor tensor) : c(comm), op(std::move(o)), t(std::move(tensor)) {}
    void wait() override { c->record("wait " + op, t); }
  };
  void record(const std::string& op, const Tensor& t) { log.push_back(op + " " + describe(t)); }
  std::string name_;
  std::vector<int> ranks_;
};

}  // namespace mt::testing
