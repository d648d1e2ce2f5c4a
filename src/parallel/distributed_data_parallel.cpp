#include "parallel/distributed_data_parallel.h"

#include <algorithm>

#include "core/error.h"

namespace mt {

int64_t default_ddp_bucket_size(int dp_size) { return std::max<int64_t>(40000000, int64_t(1000000) * dp_size); }

int64_t ddp_bucket_pad_multiple(int dp_size, bool use_distributed_optimizer) {
  return use_distributed_optimizer ? int64_t(16) * dp_size : 16;
}

DistributedDataParallel::DistributedDataParallel(ParamAndGradBuffer& buf, Communicator& dp, const DDPConfig& cfg)
    : buf_(buf), dp_(dp), cfg_(cfg) {
  MT_CHECK(buf.allocated(), "DistributedDataParallel needs an allocated buffer");
  MT_CHECK(!cfg.overlap_param_gather || cfg.use_distributed_optimizer,
           "overlap_param_gather needs the distributed optimizer");
  const auto& buckets = buf.buckets();
  if (cfg.use_distributed_optimizer)
    for (const auto& b : buckets)
      MT_CHECK(b.numel % dp.size() == 0, "bucket of {} elements does not split over {} ranks", b.numel, dp.size());
  bucket_of_.assign(buf.infos().size(), -1);
  grads_pending_.assign(buckets.size(), 0);
  for (size_t b = 0; b < buckets.size(); ++b) {
    for (int id : buckets[b].params) bucket_of_[size_t(id)] = int(b);
    grads_pending_[b] = int(buckets[b].params.size());
  }
  grad_work_.resize(buckets.size());
  param_work_.resize(buckets.size());
}

int64_t DistributedDataParallel::shard_numel(size_t b) const { return buf_.buckets()[b].numel / dp_.size(); }

int64_t DistributedDataParallel::shard_offset(size_t b) const {
  return buf_.buckets()[b].offset + int64_t(dp_.rank()) * shard_numel(b);
}

void DistributedDataParallel::start_grad_reduce(size_t b) {
  const GradBucket& bk = buf_.buckets()[b];
  grads_pending_[b] = -1;  // started
  if (bk.numel == 0) return;
  const Tensor& g = buf_.main_grads();
  Tensor grads = g.flat_slice(bk.offset, bk.numel, {bk.numel});
  if (cfg_.use_distributed_optimizer)
    grad_work_[b] = dp_.reduce_scatter_async(grads, g.flat_slice(shard_offset(b), shard_numel(b), {shard_numel(b)}));
  else
    grad_work_[b] = dp_.all_reduce_async(grads);
}

void DistributedDataParallel::after_backward(int first, int end) {
  if (!cfg_.overlap_grad_reduce || !last_microbatch_ || dp_.size() == 1) return;
  for (int id = first; id < end; ++id) {
    const int b = bucket_of_[size_t(id)];
    if (b >= 0 && grads_pending_[size_t(b)] > 0 && --grads_pending_[size_t(b)] == 0) start_grad_reduce(size_t(b));
  }
}

void DistributedDataParallel::finish_grad_sync() {
  const auto& buckets = buf_.buckets();
  if (dp_.size() > 1) {
    for (size_t b = 0; b < buckets.size(); ++b)
      if (grads_pending_[b] >= 0) start_grad_reduce(b);
    for (auto& w : grad_work_)
      if (w) w->wait();
  }
  for (size_t b = 0; b < buckets.size(); ++b) {
    grad_work_[b].reset();
    grads_pending_[b] = int(buckets[b].params.size());
  }
}

void DistributedDataParallel::start_param_gather(size_t b) {
  const GradBucket& bk = buf_.buckets()[b];
  if (bk.numel == 0) return;
  const Tensor& p = buf_.params();
  Tensor shard = p.flat_slice(shard_offset(b), shard_numel(b), {shard_numel(b)});
  Tensor whole = p.flat_slice(bk.offset, bk.numel, {bk.numel});
  if (cfg_.overlap_param_gather)
    param_work_[b] = dp_.all_gather_async(shard, whole);
  else
    dp_.all_gather(shard, whole);
}

void DistributedDataParallel::all_gather_params() {
  if (dp_.size() == 1) return;
  // Forward order: the last bucket holds the first-registered parameters (the embeddings).
  for (size_t b = buf_.buckets().size(); b-- > 0;) start_param_gather(b);
}

void DistributedDataParallel::before_forward(int first, int end) {
  for (int id = first; id < end; ++id) {
    const int b = bucket_of_[size_t(id)];
    if (b >= 0 && param_work_[size_t(b)]) {
      param_work_[size_t(b)]->wait();
      param_work_[size_t(b)].reset();
    }
  }
}

void DistributedDataParallel::finish_param_gather() {
  for (auto& w : param_work_)
    if (w) {
      w->wait();
      w.reset();
    }
}

}  // namespace mt
