#pragma once
// ParamAndGradBuffer (Megatron-Core's name): all parameters of a model chunk in one contiguous
// buffer of the model dtype, and their gradients in one contiguous fp32 "main grad" buffer of
// the same layout. Layers hold named views into both. Data-parallel reduction, the optimizer,
// grad clipping and checkpoint sharding work on the flat buffers and the name table.
//
// Registration order is layout order. The buffers are cut into buckets in reverse registration
// order, the order in which backward finishes grads: data-parallel reduction works bucket by
// bucket, and with the distributed optimizer each bucket is padded so that it splits into
// equal contiguous shards, one per data-parallel rank.
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct ParamInfo {
  std::string name;  // global name, e.g. "decoder.layers.0.mlp.linear_fc1.weight"
  Shape shape;       // local shape (this rank's shard)
  int64_t offset = 0;  // element offset in the flat buffers
  int64_t numel = 0;
  bool no_weight_decay = false;  // biases and norm weights
  // Tensor parallelism: the full tensor's shape and this rank's slice of it along shard_dim
  // ([shard_start, shard_start + shape[shard_dim])); shard_dim -1: not split (replicated on
  // every tensor-parallel rank, each keeping an identical copy).
  Shape global_shape;
  int shard_dim = -1;
  int64_t shard_start = 0;
  // Replicated, but each tensor-parallel rank computes its gradient from part of the work: a
  // partial sum to all-reduce over the tensor-parallel group (Megatron's name for the first
  // case: a sequence-parallel shard of the tokens for norm weights and row-parallel biases; also
  // this rank's heads for the q/k norm weights).
  bool sequence_parallel = false;
  // A copy of a parameter that another pipeline stage owns (the tied word embeddings on the last
  // stage, Megatron's shared embedding): its gradient is summed with the owner's before the step,
  // and it is counted, clipped and saved once, on the owner's side.
  bool pipeline_duplicate = false;
  bool tensor_parallel() const { return shard_dim >= 0; }
};

// A contiguous range of the flat buffers holding whole parameters (numel includes padding).
struct GradBucket {
  int64_t offset = 0, numel = 0;
  std::vector<int> params;  // ids, ascending
};

class ParamAndGradBuffer {
 public:
  using Id = int;

  // Registers a parameter; must precede allocate().
  Id add(const std::string& name, const Shape& shape, bool no_weight_decay);
  // A tensor-parallel shard: `shape` is the local slice [shard_start, +shape[shard_dim]) of
  // global_shape along shard_dim.
  Id add_shard(const std::string& name, const Shape& shape, const Shape& global_shape, int shard_dim,
               int64_t shard_start, bool no_weight_decay);
  void set_sequence_parallel(Id id, bool on) { infos_[id].sequence_parallel = on; }
  void set_pipeline_duplicate(Id id, bool on) { infos_[id].pipeline_duplicate = on; }
  // Bucketing (Megatron's --ddp-bucket-size), before allocate(): buckets are filled with
  // parameters in reverse registration order until they hold at least bucket_size elements
  // (<= 0: one bucket), and each is padded to a multiple of pad_multiple elements. Without a
  // call: one bucket, no padding beyond the per-parameter 16-element alignment.
  void set_bucketing(int64_t bucket_size, int64_t pad_multiple);
  // Allocates the parameter buffer (param_dtype) and the fp32 main-grad buffer (zeroed).
  void allocate(DType param_dtype, Device device);

  // Lazy gradient zeroing. A parameter marked here (before allocate()) gets the first gradient
  // of each accumulation round from a GEMM that overwrites its grad (beta = grad_beta(id) = 0)
  // instead of adding to it, so the round starts without zeroing it: for the weight matrices,
  // nearly all of the buffer, that saves a pass writing zeros and the GEMMs' read of them.
  void set_overwrites_first_grad(Id id);
  // Starts an accumulation round (an iteration's microbatches): zeroes, in one launch, every
  // gradient except the marked ones (and all padding); those hold stale values until their
  // first GEMM.
  void begin_grad_accumulation() const;
  // beta for a GEMM adding into grad(id): 0 for the round's first contribution to a marked
  // parameter, else 1. Each call counts as that contribution.
  float grad_beta(Id id) const;
  // Zeroes the marked grads of parameters [first, end) nothing has written this round, so that
  // they can be read or added to by something other than a GEMM (a no-op when all were written).
  void zero_unwritten_grads(Id first, Id end) const;
  // Zeroes every gradient now (tests; no lazy state left for the round).
  void zero_grads() const;
  // Buckets in reduction order: bucket 0 holds the last-registered parameters.
  const std::vector<GradBucket>& buckets() const { return buckets_; }

  bool allocated() const { return params_.defined(); }
  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(Id id) const { return infos_[id]; }
  Id find(const std::string& name) const;  // -1 when absent
  int64_t numel() const { return total_; }

  Tensor param(Id id) const;
  Tensor grad(Id id) const;
  const Tensor& params() const { return params_; }      // flat, model dtype
  const Tensor& main_grads() const { return grads_; }   // flat, fp32

 private:
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, Id> by_name_;
  int64_t total_ = 0;
  int64_t bucket_size_ = 0, pad_multiple_ = 16;
  std::vector<GradBucket> buckets_;
  Tensor params_, grads_;
  std::vector<char> overwrites_first_;  // per parameter: set_overwrites_first_grad
  mutable std::vector<char> unwritten_;  // per parameter: marked and not yet written this round
  Tensor eager_ranges_;                  // int64 [R, 2] (offset, length): what begin zeroes
};

}  // namespace mt
