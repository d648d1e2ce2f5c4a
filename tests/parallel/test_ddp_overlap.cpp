// --overlap-grad-reduce / --overlap-param-gather as a specification of *when* DDP talks: with a
// recording communicator of two ranks, the last microbatch's backward itself starts every
// gradient bucket, in bucket order (the order backward finishes them), and finish_grad_sync()
// only waits; earlier microbatches and the non-overlapped path start nothing during backward.
// After the step the parameter all-gathers start in forward order and each module's forward
// waits for its own bucket just before reading it.
#include <gtest/gtest.h>

#include "comm/recording_comm.h"
#include "model/gpt_model.h"
#include "parallel/distributed_data_parallel.h"

using namespace mt;

namespace {

TransformerConfig tiny() {
  TransformerConfig c;
  c.num_layers = 3;
  c.hidden_size = 16;
  c.ffn_hidden_size = 32;
  c.num_attention_heads = 2;
  c.seq_length = c.max_position_embeddings = 8;
  c.vocab_size = 50;
  c.padded_vocab_size = 64;
  c.hidden_dropout = c.attention_dropout = 0.0f;
  return c;
}

struct Fixture {
  mt::testing::RecordingComm comm;
  const float* base = nullptr;  // start of the flat buffer the logged offsets are counted from
  ModelParallelConfig par;
  std::unique_ptr<GPTModel> model;
  std::unique_ptr<DistributedDataParallel> ddp;
  Tensor tokens = Tensor::zeros({1, 8}, DType::I32), dloss = Tensor::zeros({8}, DType::F32);

  explicit Fixture(const DDPConfig& cfg) {
    par.bucket_size = 2000;  // a bucket per layer or so
    par.bucket_pad = ddp_bucket_pad_multiple(2, cfg.use_distributed_optimizer);
    model = std::make_unique<GPTModel>(tiny(), Device::cpu(), par);
    model->init(1);
    ddp = std::make_unique<DistributedDataParallel>(model->buffer(), comm, cfg);
    model->set_param_hooks(ddp.get());
    base = model->buffer().main_grads().data<float>();
    comm.describe = [this](const Tensor& t) {
      return std::to_string((static_cast<const char*>(t.raw()) - reinterpret_cast<const char*>(base)) / 4);
    };
  }
  void forward_backward() {
    GPTModel::Saved s;
    model->forward_loss(tokens, tokens, ForwardContext{}, &dloss, s);
    model->backward(s);
  }
  // "op offset" for every bucket, in bucket order.
  std::vector<std::string> bucket_starts(const std::string& op) const {
    std::vector<std::string> v;
    for (const auto& b : model->buffer().buckets()) v.push_back(op + " " + std::to_string(b.offset));
    return v;
  }
};

}  // namespace

TEST(DDPOverlap, LastMicrobatchBackwardStartsEveryBucketInOrder) {
  Fixture f(DDPConfig{false, true, false});
  ASSERT_GE(f.model->buffer().buckets().size(), 3u);
  f.ddp->set_last_microbatch(false);
  f.forward_backward();
  EXPECT_TRUE(f.comm.log.empty()) << "an earlier microbatch's grads are not final";
  f.ddp->set_last_microbatch(true);
  f.forward_backward();
  EXPECT_EQ(f.comm.log, f.bucket_starts("all_reduce")) << "started during backward, bucket 0 (last layers) first";
  f.comm.log.clear();
  f.ddp->finish_grad_sync();
  std::vector<std::string> waits;
  for (const auto& s : f.bucket_starts("all_reduce")) waits.push_back("wait " + s);
  EXPECT_EQ(f.comm.log, waits) << "finish_grad_sync only waits";
  // The next iteration starts afresh.
  f.comm.log.clear();
  f.forward_backward();
  EXPECT_EQ(f.comm.log, f.bucket_starts("all_reduce"));
}

TEST(DDPOverlap, WithoutOverlapNothingHappensDuringBackward) {
  Fixture f(DDPConfig{true, false, false});
  f.forward_backward();
  EXPECT_TRUE(f.comm.log.empty());
  f.ddp->finish_grad_sync();
  // Started in bucket order, each waited on (the default async runs at once; waits are no-ops).
  std::vector<std::string> starts;
  for (const auto& l : f.comm.log)
    if (l.rfind("wait", 0) != 0) starts.push_back(l);
  EXPECT_EQ(starts, f.bucket_starts("reduce_scatter"));
}

TEST(DDPOverlap, ParamGatherStartsInForwardOrderAndForwardWaitsPerBucket) {
  Fixture f(DDPConfig{true, true, true});
  const size_t nb = f.model->buffer().buckets().size();
  f.base = f.model->buffer().params().data<float>();
  f.ddp->all_gather_params();
  std::vector<std::string> reversed = f.bucket_starts("all_gather");
  std::reverse(reversed.begin(), reversed.end());
  EXPECT_EQ(f.comm.log, reversed) << "the embeddings' bucket (the last) first";
  f.comm.log.clear();
  f.ddp->set_last_microbatch(false);
  GPTModel::Saved s;
  f.model->forward_loss(f.tokens, f.tokens, ForwardContext{}, &f.dloss, s);
  std::vector<std::string> waits;
  for (const auto& g : reversed) waits.push_back("wait " + g);
  EXPECT_EQ(f.comm.log, waits) << "forward waits for each bucket once, in forward order";
  EXPECT_EQ(f.comm.log.size(), nb);
  f.comm.log.clear();
  f.ddp->finish_param_gather();
  EXPECT_TRUE(f.comm.log.empty()) << "nothing left in flight";
}
