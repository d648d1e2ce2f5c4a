#include "parallel/schedules.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "parallel/schedule_losses.h"

namespace mt {

std::vector<double> forward_backward_no_pipelining(const GPTModel& model, DistributedDataParallel* ddp,
                                      const MicrobatchSource& microbatch, const MicrobatchContext& context,
                                      const ScheduleConfig& cfg) {
  const int M = cfg.num_microbatches;
  std::vector<Tensor> losses(static_cast<size_t>(M)), masks(static_cast<size_t>(M));
  Tensor dloss;
  for (int m = 0; m < M; ++m) {
    Microbatch mb = microbatch(m);
    const int64_t n = mb.tokens.numel();
    GPTModel::Saved saved;
    ForwardContext ctx = context(m);
    if (mb.positions.defined()) ctx.positions = &mb.positions;
    if (cfg.forward_only) {
      losses[size_t(m)] = model.forward_loss(mb.tokens, mb.labels, ctx, nullptr, saved);
    } else {
      if (!dloss.defined() || dloss.numel() != n) dloss = Tensor::empty({n}, DType::F32, mb.tokens.device());
      // The fused loss needs dloss in the same pass: from the mask, known before the forward.
      fill_dloss(mb.loss_mask, n, cfg, dloss);
      if (ddp) ddp->set_last_microbatch(m == M - 1);
      losses[size_t(m)] = model.forward_loss(mb.tokens, mb.labels, ctx, &dloss, saved);
      model.backward(saved);
    }
    masks[size_t(m)] = mb.loss_mask;
  }
  // The losses, read after every microbatch is enqueued.
  return microbatch_means(losses, masks, cfg);
}

std::vector<double> forward_backward(const std::vector<const GPTModel*>& chunks, DistributedDataParallel* ddp,
                                     const PipelineSetup& setup, const MicrobatchSource& microbatch,
                                     const MicrobatchContext& context, const ScheduleConfig& cfg) {
  if ((!setup.pp || setup.pp->size() == 1) && chunks.size() == 1)
    return forward_backward_no_pipelining(*chunks.front(), ddp, microbatch, context, cfg);
  return forward_backward_pipelining(chunks, ddp, setup, microbatch, context, cfg);
}

void finalize_model_grads(DistributedDataParallel& ddp, const std::vector<const GPTModel*>& chunks,
                          Communicator* embedding_group) {
  if (embedding_group && embedding_group->size() > 1)
    for (const GPTModel* c : chunks)
      if (c->shared_embedding() >= 0) embedding_group->all_reduce(c->buffer().grad(c->shared_embedding()));
  ddp.finish_grad_sync();
  chunks.front()->finish_grad_sync();  // the buffer is the chunks'
}

}  // namespace mt
