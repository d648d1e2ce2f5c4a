// The NCCL communicator's collectives on two GPUs of one process (ncclCommInitAll, a thread per
// device). Skipped without NCCL in the build or without two GPUs.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "core/cuda/cuda_backend.h"
#include "comm/nccl_communicator.h"

#ifdef MT_WITH_NCCL
#include <cuda_runtime.h>
#endif

using namespace mt;

namespace {

Tensor host_f32(const std::vector<float>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::F32);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}
std::vector<float> to_vec(const Tensor& t) {
  Tensor h = t.to(Device::cpu());
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

}  // namespace

TEST(NcclCommunicator, CollectivesOnTwoGpus) {
#ifndef MT_WITH_NCCL
  GTEST_SKIP() << "built without NCCL";
#else
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs";
  cuda_init_backend();
  auto comms = dist::nccl_communicators_for_devices({0, 1});
  std::vector<std::vector<std::string>> errors(2);
  auto body = [&](int r) {
    cudaSetDevice(r);
    Communicator& c = *comms[size_t(r)];
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) errors[size_t(r)].push_back(what);
    };
    const Device dev = Device::cuda(r);
    expect(c.rank() == r && c.size() == 2, "rank/size");
    // all_reduce sum and max
    Tensor t = host_f32({float(r + 1), float(-r), 0.5f}).to(dev);
    c.all_reduce(t);
    expect(to_vec(t) == std::vector<float>({3.0f, -1.0f, 1.0f}), "all_reduce sum");
    Tensor m = host_f32({float(r), float(-r)}).to(dev);
    c.all_reduce(m, ReduceOp::Max);
    expect(to_vec(m) == std::vector<float>({1.0f, 0.0f}), "all_reduce max");
    // reduce_scatter: rank r gets the sum of chunk r
    Tensor in = host_f32({1.0f + r, 2.0f + r, 3.0f + r, 4.0f + r}).to(dev);
    Tensor out = Tensor::empty({2}, DType::F32, dev);
    c.reduce_scatter(in, out);
    expect(to_vec(out) == (r == 0 ? std::vector<float>({3, 5}) : std::vector<float>({7, 9})), "reduce_scatter");
    // all_gather, in place (the shard inside the full buffer, as the distributed optimizer does)
    Tensor full = host_f32({0, 0, 0, 0}).to(dev);
    full.flat_slice(2 * r, 2, {2}).copy_from(host_f32({10.0f * r, 10.0f * r + 1}).to(dev));
    c.all_gather(full.flat_slice(2 * r, 2, {2}), full);
    expect(to_vec(full) == std::vector<float>({0, 1, 10, 11}), "all_gather in place");
    // broadcast from rank 1, all_to_all, send/recv
    Tensor b = host_f32({float(r), float(r)}).to(dev);
    c.broadcast(b, 1);
    expect(to_vec(b) == std::vector<float>({1, 1}), "broadcast");
    Tensor ba = host_f32({float(r), 5.0f}).to(dev);
    c.broadcast_async(ba, 0)->wait();  // on the side stream; to_vec copies after the wait
    expect(to_vec(ba) == std::vector<float>({0, 5}), "broadcast_async");
    Tensor rin = host_f32({1.0f + r, 2.0f}).to(dev), rout = host_f32({-1, -1}).to(dev);
    c.reduce_async(rin, rout, 1)->wait();
    expect(to_vec(rout) == (r == 1 ? std::vector<float>({3, 4}) : std::vector<float>({-1, -1})), "reduce_async to 1");
    Tensor a = host_f32({10.0f * r, 10.0f * r + 1}).to(dev), a2 = Tensor::empty({2}, DType::F32, dev);
    c.all_to_all(a, a2);
    expect(to_vec(a2) == (r == 0 ? std::vector<float>({0, 10}) : std::vector<float>({1, 11})), "all_to_all");
    Tensor s = host_f32({42.0f}).to(dev), q = Tensor::empty({1}, DType::F32, dev);
    if (r == 0) c.send(s, 1);
    else c.recv(q, 0);
    if (r == 1) expect(to_vec(q) == std::vector<float>({42.0f}), "send/recv");
    double d = c.all_reduce_scalar(0.25 + r);
    expect(d == 1.5, "all_reduce_f64");
    // split: every rank alone
    auto alone = c.split(r, 0, "alone");
    expect(alone && alone->size() == 1 && alone->world_ranks()[0] == r, "split");
    c.barrier();
  };
  std::thread t0(body, 0), t1(body, 1);
  t0.join();
  t1.join();
  for (int r = 0; r < 2; ++r)
    for (const auto& e : errors[size_t(r)]) ADD_FAILURE() << "rank " << r << ": " << e;
#endif
}
