// Run under mpirun (-np 3 and -np 4): every collective of MpiCommunicator on every dtype,
// checked against values each rank can compute itself; sums must be identical on every rank
// and equal to the rank-ordered fp32 sum; groups split in Megatron's order.
#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"
#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"

using namespace mt;

namespace {

std::unique_ptr<Communicator> g_world;

// One correctly rounded division (no multiply-add the compiler could contract differently in
// different call sites), values whose fp32 sums depend on the order.
float value(int rank, int64_t i) { return float(int64_t(rank + 1) * 7919 % 1000 + (i % 97) * 31 - 1500) / 7.0f; }

// What rank-ordered fp32 summation of value(r, i) over r gives.
float expected_sum(int size, int64_t i) {
  float acc = value(0, i);
  for (int r = 1; r < size; ++r) acc += value(r, i);
  return acc;
}

}  // namespace

TEST(Mpi, AllReduceSumFp32IsRankOrderedAndIdenticalEverywhere) {
  Communicator& w = *g_world;
  const int64_t n = 1001;  // not a multiple of the group size: exercises the padding
  Tensor t = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = value(w.rank(), i);
  w.all_reduce(t);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(t.data<float>()[i], expected_sum(w.size(), i)) << i;
  // Identical bits on every rank: rank 0's result broadcast equals ours.
  Tensor r0 = Tensor::empty({n}, DType::F32);
  r0.copy_from(t);
  w.broadcast(r0, 0);
  EXPECT_EQ(std::memcmp(r0.raw(), t.raw(), t.nbytes()), 0);
}

TEST(Mpi, AllReduceHalfTypesAccumulateInFp32) {
  Communicator& w = *g_world;
  const int64_t n = 37;
  Tensor b = Tensor::empty({n}, DType::BF16), h = Tensor::empty({n}, DType::F16);
  for (int64_t i = 0; i < n; ++i) {
    b.data<bf16>()[i] = to_bf16(value(w.rank(), i));
    h.data<f16>()[i] = to_f16(value(w.rank(), i));
  }
  w.all_reduce(b);
  w.all_reduce(h);
  for (int64_t i = 0; i < n; ++i) {
    float eb = to_f32(to_bf16(value(0, i))), eh = to_f32(to_f16(value(0, i)));
    for (int r = 1; r < w.size(); ++r) {
      eb += to_f32(to_bf16(value(r, i)));
      eh += to_f32(to_f16(value(r, i)));
    }
    EXPECT_EQ(to_f32(b.data<bf16>()[i]), to_f32(to_bf16(eb))) << i;
    EXPECT_EQ(to_f32(h.data<f16>()[i]), to_f32(to_f16(eh))) << i;
  }
}

TEST(Mpi, AllReduceMaxAndIntegers) {
  Communicator& w = *g_world;
  Tensor f = Tensor::empty({5}, DType::F32), k = Tensor::empty({5}, DType::I32), l = Tensor::empty({5}, DType::I64);
  for (int i = 0; i < 5; ++i) {
    f.data<float>()[i] = float(w.rank() * (i % 2 ? 1 : -1));
    k.data<int32_t>()[i] = w.rank() + i;
    l.data<int64_t>()[i] = (int64_t(1) << 40) * (w.rank() + 1);
  }
  w.all_reduce(f, ReduceOp::Max);
  w.all_reduce(k);
  w.all_reduce(l, ReduceOp::Max);
  const int S = w.size();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(f.data<float>()[i], i % 2 ? float(S - 1) : 0.0f);
    EXPECT_EQ(k.data<int32_t>()[i], S * (S - 1) / 2 + S * i);
    EXPECT_EQ(l.data<int64_t>()[i], (int64_t(1) << 40) * S);
  }
  double d = w.all_reduce_scalar(1e-12 * (w.rank() + 1) + 1.0);
  EXPECT_DOUBLE_EQ(d, S + 1e-12 * S * (S + 1) / 2);
  EXPECT_EQ(w.all_reduce_scalar(double(w.rank()), ReduceOp::Max), double(S - 1));
}

TEST(Mpi, ReduceScatterAndAllGather) {
  Communicator& w = *g_world;
  const int S = w.size();
  const int64_t n = 10;
  Tensor in = Tensor::empty({n * S}, DType::F32), out = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n * S; ++i) in.data<float>()[i] = value(w.rank(), i);
  w.reduce_scatter(in, out);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out.data<float>()[i], expected_sum(S, w.rank() * n + i));
  Tensor all = Tensor::empty({n * S}, DType::F32);
  w.all_gather(out, all);
  for (int64_t i = 0; i < n * S; ++i) EXPECT_EQ(all.data<float>()[i], expected_sum(S, i));
}

TEST(Mpi, ReduceToEachRootIsTheRankOrderedSumAndAsyncMatches) {
  Communicator& w = *g_world;
  const int S = w.size();
  const int64_t n = 13;
  Tensor in = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) in.data<float>()[i] = value(w.rank(), i);
  for (int root = 0; root < S; ++root) {
    Tensor out = Tensor::zeros({n}, DType::F32), out2 = Tensor::zeros({n}, DType::F32);
    w.reduce(in, out, root);
    w.reduce_async(in, out2, root)->wait();
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(out.data<float>()[i], w.rank() == root ? expected_sum(S, i) : 0.0f) << root << " " << i;
      EXPECT_EQ(out2.data<float>()[i], out.data<float>()[i]) << root << " " << i;
    }
  }
}

TEST(Mpi, BroadcastSendRecvAllToAll) {
  Communicator& w = *g_world;
  const int S = w.size();
  Tensor t = Tensor::empty({3}, DType::I32);
  for (int i = 0; i < 3; ++i) t.data<int32_t>()[i] = w.rank() * 10 + i;
  w.broadcast(t, S - 1);
  EXPECT_EQ(t.data<int32_t>()[2], (S - 1) * 10 + 2);
  // Ring: send to the next rank, receive from the previous (even ranks send first).
  Tensor s = Tensor::empty({4}, DType::F32), r = Tensor::empty({4}, DType::F32);
  for (int i = 0; i < 4; ++i) s.data<float>()[i] = float(w.rank() * 100 + i);
  const int next = (w.rank() + 1) % S, prev = (w.rank() + S - 1) % S;
  if (w.rank() % 2 == 0) {
    w.send(s, next);
    w.recv(r, prev);
  } else {
    w.recv(r, prev);
    w.send(s, next);
  }
  EXPECT_EQ(r.data<float>()[3], float(prev * 100 + 3));
  Tensor a = Tensor::empty({2 * S}, DType::I64), b = Tensor::empty({2 * S}, DType::I64);
  for (int i = 0; i < 2 * S; ++i) a.data<int64_t>()[i] = w.rank() * 1000 + i;
  w.all_to_all(a, b);
  for (int src = 0; src < S; ++src)
    for (int j = 0; j < 2; ++j) EXPECT_EQ(b.data<int64_t>()[2 * src + j], src * 1000 + 2 * w.rank() + j);
  w.barrier();
}

TEST(Mpi, GroupsFollowMegatronOrder) {
  const int S = g_world->size();
  const int tp = S % 2 == 0 ? 2 : 1;
  ProcessGroups g(dist::world(), {tp, 1, 1, 1});
  EXPECT_EQ(g.tp().size(), tp);
  EXPECT_EQ(g.dp().size(), S / tp);
  EXPECT_EQ(g.mp().size(), tp);
  EXPECT_EQ(g.tp_dp().size(), S);
  // tp group members are consecutive world ranks; dp members are tp apart.
  const int r = g.rank();
  EXPECT_EQ(g.tp().world_ranks()[0], r - r % tp);
  for (int i = 0; i < g.dp().size(); ++i) EXPECT_EQ(g.dp().world_ranks()[size_t(i)], r % tp + i * tp);
  // A sum over tp then over dp equals the sum over the world.
  double v = g.dp().all_reduce_scalar(g.tp().all_reduce_scalar(double(r)));
  EXPECT_EQ(v, double(S * (S - 1) / 2));
  ASSERT_NE(g.embedding(), nullptr);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  dist::init(true);
  dist::set_timeout_seconds(60);
  g_world = dist::world();
  if (g_world->rank() != 0) {
    auto& ls = ::testing::UnitTest::GetInstance()->listeners();
    delete ls.Release(ls.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  // Every rank's verdict counts: fail if any rank failed.
  rc = int(g_world->all_reduce_scalar(double(rc), ReduceOp::Max));
  g_world.reset();
  return rc;
}
