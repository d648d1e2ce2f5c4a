#include "dist/communicator.h"

#include "core/error.h"

namespace mt {

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

void SelfCommunicator::send(const Tensor&, int dst) { MT_CHECK(false, "send to rank {} in a group of one", dst); }
void SelfCommunicator::recv(const Tensor&, int src) { MT_CHECK(false, "recv from rank {} in a group of one", src); }

std::unique_ptr<Communicator> SelfCommunicator::split(int color, int, const std::string& name) {
  if (color < 0) return nullptr;
  return std::make_unique<SelfCommunicator>(name, ranks_[0]);
}

}  // namespace mt
