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
  if (cfg.use_distributed_optimizer)
    for (const auto& b : buf.buckets())
      MT_CHECK(b.numel % dp.size() == 0, "bucket of {} elements does not split over {} ranks", b.numel, dp.size());
}

int64_t DistributedDataParallel::shard_numel(size_t b) const { return buf_.buckets()[b].numel / dp_.size(); }

int64_t DistributedDataParallel::shard_offset(size_t b) const {
  return buf_.buckets()[b].offset + int64_t(dp_.rank()) * shard_numel(b);
}

void DistributedDataParallel::finish_grad_sync() {
  if (dp_.size() == 1) return;
  const Tensor& g = buf_.main_grads();
  for (size_t b = 0; b < buf_.buckets().size(); ++b) {
    const GradBucket& bk = buf_.buckets()[b];
    if (bk.numel == 0) continue;
    Tensor grads = g.flat_slice(bk.offset, bk.numel, {bk.numel});
    if (cfg_.use_distributed_optimizer)
      dp_.reduce_scatter(grads, g.flat_slice(shard_offset(b), shard_numel(b), {shard_numel(b)}));
    else
      dp_.all_reduce(grads);
  }
}

void DistributedDataParallel::all_gather_params() {
  if (dp_.size() == 1) return;
  const Tensor& p = buf_.params();
  for (size_t b = 0; b < buf_.buckets().size(); ++b) {
    const GradBucket& bk = buf_.buckets()[b];
    if (bk.numel == 0) continue;
    dp_.all_gather(p.flat_slice(shard_offset(b), shard_numel(b), {shard_numel(b)}),
                   p.flat_slice(bk.offset, bk.numel, {bk.numel}));
  }
}

}  // namespace mt
