#include "comm/communicator.h"

#include "core/error.h"

namespace mt {
namespace {
struct DoneHandle final : CommHandle {
  void wait() override {}
};
}  // namespace

std::unique_ptr<CommHandle> Communicator::all_reduce_async(const Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return std::make_unique<DoneHandle>();
}

std::unique_ptr<CommHandle> Communicator::reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) {
  reduce_scatter(in, out, op);
  return std::make_unique<DoneHandle>();
}

std::unique_ptr<CommHandle> Communicator::all_gather_async(const Tensor& in, const Tensor& out) {
  all_gather(in, out);
  return std::make_unique<DoneHandle>();
}

std::unique_ptr<CommHandle> Communicator::broadcast_async(const Tensor& t, int root) {
  broadcast(t, root);
  return std::make_unique<DoneHandle>();
}

void Communicator::reduce(const Tensor& in, const Tensor& out, int root, ReduceOp op) {
  MT_CHECK(in.numel() == out.numel() && in.dtype() == out.dtype(), "reduce on {}: in {} / out {}", name(), in.str(),
           out.str());
  MT_CHECK(root >= 0 && root < size(), "reduce on {}: root {} outside a group of {}", name(), root, size());
  Tensor sum = in.to(in.device());
  all_reduce(sum, op);
  if (rank() == root) out.copy_from(sum);
}

std::unique_ptr<CommHandle> Communicator::reduce_async(const Tensor& in, const Tensor& out, int root, ReduceOp op) {
  reduce(in, out, root, op);
  return std::make_unique<DoneHandle>();
}

void SelfCommunicator::reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp) {
  MT_CHECK(in.numel() == out.numel(), "reduce_scatter on {}: in {} / out {}", name_, in.str(), out.str());
  if (in.raw() != out.raw()) out.copy_from(in);
}

void SelfCommunicator::all_gather(const Tensor& in, const Tensor& out) {
  MT_CHECK(in.numel() == out.numel(), "all_gather on {}: in {} / out {}", name_, in.str(), out.str());
  if (in.raw() != out.raw()) out.copy_from(in);
}

void SelfCommunicator::all_to_all(const Tensor& in, const Tensor& out) {
  MT_CHECK(in.numel() == out.numel(), "all_to_all on {}: in {} / out {}", name_, in.str(), out.str());
  if (in.raw() != out.raw()) out.copy_from(in);
}

void SelfCommunicator::all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                                    const std::vector<int64_t>& recv_counts) {
  MT_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0] &&
               in.numel() >= send_counts[0] && out.numel() >= recv_counts[0],
           "all_to_all_v on {}: in {} / out {}", name_, in.str(), out.str());
  if (in.raw() != out.raw() && send_counts[0] > 0)
    out.flat_slice(0, send_counts[0], {send_counts[0]}).copy_from(in.flat_slice(0, send_counts[0], {send_counts[0]}));
}

void SelfCommunicator::send(const Tensor&, int dst) { MT_CHECK(false, "send to rank {} in a group of one", dst); }
void SelfCommunicator::recv(const Tensor&, int src) { MT_CHECK(false, "recv from rank {} in a group of one", src); }
std::unique_ptr<CommHandle> SelfCommunicator::batch_send_recv(const std::vector<P2POp>& ops) {
  MT_CHECK(ops.empty(), "point-to-point transfer with rank {} in a group of one", ops.front().peer);
  return std::make_unique<DoneHandle>();
}

std::unique_ptr<Communicator> SelfCommunicator::split(int color, int, const std::string& name) {
  if (color < 0) return nullptr;
  return std::make_unique<SelfCommunicator>(name, ranks_[0]);
}

}  // namespace mt
