// --async-tensor-model-parallel-allreduce as a specification of *when* ColumnParallelLinear's
// backward reduces dx over tensor-parallel ranks: with it, the collective starts before the
// weight gradient is computed and is waited for after it (on GPUs the two overlap); without it,
// one blocking collective once the weight gradient is done. The returned dx is the same either
// way. With --tp-comm-overlap, sequence parallelism's all-gather arrives as one broadcast per
// rank's block and each block is used as soon as it is present. (A recording communicator,
// which leaves the data alone.)
#include <gtest/gtest.h>

#include <memory>

#include "comm/recording_comm.h"
#include "kernels/elementwise.h"
#include "model/tensor_parallel.h"

using namespace mt;

namespace {

struct Fixture {
  mt::testing::RecordingComm tp{"tp", 2};
  ParamAndGradBuffer buf;
  std::unique_ptr<ColumnParallelLinear> fc;
  Tensor dx;

  // 6 tokens, 8 -> 12 features split over 2 ranks; dx of the whole input, reduced over TP.
  Fixture(bool sequence_parallel, bool async) {
    ModelParallelConfig par;
    par.tp = &tp;
    par.sequence_parallel = sequence_parallel;
    par.async_tp_allreduce = async;
    fc = std::make_unique<ColumnParallelLinear>(buf, "fc", 8, 12, par);
    buf.allocate(DType::F32, Device::cpu());
    fc->init(0.5f, 3);
    // Is any weight or bias gradient computed yet, when the communicator is called?
    tp.describe = [this](const Tensor&) {
      const Tensor& g = buf.main_grads();
      for (int64_t i = 0; i < g.numel(); ++i)
        if (g.data<float>()[i] != 0.0f) return std::string("after wgrad");
      return std::string("before wgrad");
    };
    ColumnParallelLinear::Saved saved{Tensor::empty({6, 8}, DType::F32)};
    fill_normal(saved.x, 1.0f, 11, 0);
    Tensor dy = Tensor::empty({6, 6}, DType::F32);
    fill_normal(dy, 1.0f, 12, 0);
    dx = fc->backward(dy, saved);
  }
};

std::vector<float> values(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

}  // namespace

TEST(TensorParallelOverlap, AsyncAllReduceStartsBeforeWeightGradAndIsWaitedAfter) {
  Fixture f(false, true);
  EXPECT_EQ(f.tp.log, (std::vector<std::string>{"all_reduce before wgrad", "wait all_reduce after wgrad"}));
  Fixture blocking(false, false);
  EXPECT_EQ(blocking.tp.log, (std::vector<std::string>{"all_reduce after wgrad"}));
  EXPECT_EQ(f.dx.shape(), (Shape{6, 8}));
  EXPECT_EQ(values(f.dx), values(blocking.dx));
  EXPECT_EQ(values(f.buf.main_grads()), values(blocking.buf.main_grads()));
}

TEST(TensorParallelOverlap, SequenceParallelReduceScatterStartsBeforeWeightGradAndIsWaitedAfter) {
  Fixture f(true, true);
  EXPECT_EQ(f.tp.log, (std::vector<std::string>{"reduce_scatter before wgrad", "wait reduce_scatter after wgrad"}));
  Fixture blocking(true, false);
  EXPECT_EQ(blocking.tp.log, (std::vector<std::string>{"reduce_scatter after wgrad"}));
  EXPECT_EQ(f.dx.shape(), (Shape{3, 8})) << "this rank's half of the tokens";
  EXPECT_EQ(f.buf.main_grads().numel(), blocking.buf.main_grads().numel());
  EXPECT_EQ(values(f.buf.main_grads()), values(blocking.buf.main_grads()));
}

TEST(TensorParallelOverlap, BlockwiseGatherBroadcastsInRankOrderAndUsesOwnBlockFirst) {
  mt::testing::RecordingComm tp("tp", 4);
  tp.my_rank = 2;
  Tensor x = Tensor::empty({2, 3}, DType::F32), out = Tensor::zeros({8, 3}, DType::F32);
  fill_normal(x, 1.0f, 5, 0);
  tp.describe = [&](const Tensor& t) {
    return "rows " + std::to_string((static_cast<const float*>(t.raw()) - out.data<float>()) / 3);
  };
  gather_tokens_blockwise(x, out, tp, [&](int64_t first, int64_t rows) {
    tp.log.push_back("use " + std::to_string(first) + "+" + std::to_string(rows));
  });
  EXPECT_EQ(tp.log, (std::vector<std::string>{
                        "broadcast rows 0", "broadcast rows 2", "broadcast rows 4", "broadcast rows 6",  // rank order
                        "use 4+2",  // its own block: no wait
                        "wait broadcast rows 6", "use 6+2", "wait broadcast rows 0", "use 0+2",
                        "wait broadcast rows 2", "use 2+2", "wait broadcast rows 4"}));
  EXPECT_EQ(values(out.narrow0(4, 2)), values(x)) << "its own block copied in place";
}

TEST(TensorParallelOverlap, RowParallelForwardReducesEachBlockToItsRankAsSoonAsItsGemmIsDone) {
  mt::testing::RecordingComm tp("tp", 2);
  tp.my_rank = 1;
  ModelParallelConfig par;
  par.tp = &tp;
  par.sequence_parallel = par.tp_comm_overlap = true;
  ParamAndGradBuffer buf;
  RowParallelLinear fc2(buf, "fc2", 8, 6, par);
  buf.allocate(DType::F32, Device::cpu());
  fc2.init(0.5f, 3);
  Tensor x = Tensor::empty({4, 4}, DType::F32);  // 4 tokens, this rank's half of the 8 features
  fill_normal(x, 1.0f, 13, 0);
  tp.describe = [&](const Tensor& t) { return "rows of " + std::to_string(t.size(0)); };
  RowParallelLinear::Saved saved;
  Tensor out = fc2.forward(x, saved);
  EXPECT_EQ(out.shape(), (Shape{2, 6})) << "this rank's half of the tokens";
  EXPECT_EQ(tp.log, (std::vector<std::string>{"reduce to 0 rows of 2", "reduce to 1 rows of 2",
                                              "wait reduce to 0 rows of 2", "wait reduce to 1 rows of 2"}))
      << "both reductions in flight before the first is waited for";
}
