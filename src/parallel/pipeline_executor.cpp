// The pipeline executor: one loop over this rank's action list, whatever the schedule.
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "core/error.h"
#include "model/weight_grad_store.h"
#include "parallel/schedule_losses.h"
#include "parallel/schedules.h"

namespace mt {

namespace {

// One microbatch's pass through one chunk: what its forward received and made, its saved
// activations, its backward's gradients, its deferred weight gradients.
struct Slot {
  Tensor input;     // received activations (chunks after the first stage)
  Tensor output;    // the forward's output, until sent
  Tensor doutput;   // received output gradient (chunks before the last stage)
  Tensor dinput;    // the backward's input gradient, until sent
  GPTModel::Saved saved;
  WeightGradStore wgrad;
  bool backward_done = false, input_grad_sent = false;
};

}  // namespace

std::vector<double> forward_backward_pipelining(const std::vector<const GPTModel*>& chunks, DistributedDataParallel* ddp,
                                                const PipelineSetup& setup, const MicrobatchSource& microbatch,
                                                const MicrobatchContext& context, const ScheduleConfig& cfg) {
  MT_CHECK(setup.pp && !chunks.empty(), "forward_backward_pipelining: a pipeline group and at least one chunk");
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  double compute_s = 0;
  Communicator& pp = *setup.pp;
  const int P = pp.size(), rank = pp.rank(), V = int(chunks.size()), M = cfg.num_microbatches;
  const PipelineSchedule schedule = build_pipeline_schedule(setup.kind, P, M, V, cfg.forward_only);
  const std::vector<PipelineAction>& actions = schedule.ranks[size_t(rank)];

  // The activations between stages: [B, T, C], or this rank's [B T / TP, C] under sequence parallelism.
  const GPTModel& first = *chunks.front();
  const TransformerConfig& tc = first.config();
  const int tp = first.parallel().tp_size();
  const bool sp = tp > 1 && first.parallel().sequence_parallel;
  const int64_t B = setup.micro_batch_size, T = setup.seq_length, C = tc.hidden_size;
  const Shape act = sp ? Shape{B * T / tp, C} : Shape{B, T, C};
  const DType dtype = tc.params_dtype;
  const Device device = first.buffer().params().device();

  std::map<std::pair<int, int>, Slot> slots;
  std::map<int, Microbatch> data;  // fetched once per microbatch, by the stages that need it
  auto batch_of = [&](int m) -> Microbatch& {
    auto it = data.find(m);
    if (it == data.end()) it = data.emplace(m, microbatch(m)).first;
    return it->second;
  };
  std::vector<Tensor> losses(static_cast<size_t>(M)), masks(static_cast<size_t>(M));
  Tensor dloss;
  const bool last_stage_here = chunks.back()->chunk().post_process;

  // Transfers: collected until the next compute, posted as one batch, waited for before the
  // next forward or backward pass. The ops keep their tensors alive until then.
  std::vector<P2POp> pending, posted;
  std::unique_ptr<CommHandle> in_flight;
  auto wait_posted = [&] {
    if (in_flight) in_flight->wait();
    in_flight.reset();
    posted.clear();
  };
  auto post = [&] {
    if (pending.empty()) return;
    wait_posted();
    in_flight = pp.batch_send_recv(pending);
    posted = std::move(pending);
    pending.clear();
  };
  auto release = [&](std::pair<int, int> key) {
    const Slot& s = slots[key];
    const bool first_stage = chunks[size_t(key.second)]->chunk().pre_process;
    if (s.backward_done && (first_stage || s.input_grad_sent)) slots.erase(key);
  };

  for (const PipelineAction& a : actions) {
    const std::pair<int, int> key{a.microbatch, a.chunk};
    const GPTModel& chunk = *chunks[size_t(a.chunk)];
    if (!a.is_compute()) {
      Slot& s = slots[key];
      switch (a.op) {
        case PipelineOp::SendForward:
          pending.push_back({P2POp::Kind::Send, s.output, a.peer});
          s.output = Tensor();
          break;
        case PipelineOp::RecvForward:
          s.input = Tensor::empty(act, dtype, device);
          pending.push_back({P2POp::Kind::Recv, s.input, a.peer});
          break;
        case PipelineOp::SendBackward:
          pending.push_back({P2POp::Kind::Send, s.dinput, a.peer});
          s.dinput = Tensor();
          s.input_grad_sent = true;
          release(key);
          break;
        case PipelineOp::RecvBackward:
          s.doutput = Tensor::empty(act, dtype, device);
          pending.push_back({P2POp::Kind::Recv, s.doutput, a.peer});
          break;
        default:
          break;
      }
      continue;
    }
    post();
    if (a.op != PipelineOp::BackwardWeight) wait_posted();
    Slot& s = slots[key];
    const int m = a.microbatch;
    const auto t0 = Clock::now();
    switch (a.op) {
      case PipelineOp::Forward: {
        ForwardContext ctx = context(m);
        ctx.batch = B;
        ctx.seq = T;
        if (setup.explicit_positions && batch_of(m).positions.defined()) ctx.positions = &batch_of(m).positions;
        const Tensor input = chunk.chunk().pre_process ? batch_of(m).tokens : s.input;
        if (chunk.chunk().post_process) {
          Microbatch& mb = batch_of(m);
          const int64_t n = mb.labels.numel();
          if (cfg.forward_only) {
            losses[size_t(m)] = chunk.forward_loss(input, mb.labels, ctx, nullptr, s.saved);
          } else {
            if (!dloss.defined() || dloss.numel() != n) dloss = Tensor::empty({n}, DType::F32, device);
            fill_dloss(mb.loss_mask, n, cfg, dloss);
            losses[size_t(m)] = chunk.forward_loss(input, mb.labels, ctx, &dloss, s.saved);
          }
          masks[size_t(m)] = mb.loss_mask;
        } else {
          s.output = chunk.forward(input, ctx, s.saved);
        }
        s.input = Tensor();
        if (cfg.forward_only) s.saved = GPTModel::Saved{};
        break;
      }
      case PipelineOp::Backward:
      case PipelineOp::BackwardInput: {
        if (ddp) ddp->set_last_microbatch(m == M - 1);
        Tensor dx;
        {
          std::optional<WeightGradStore::Scope> defer;
          if (a.op == PipelineOp::BackwardInput) defer.emplace(&s.wgrad);
          dx = chunk.chunk().post_process ? chunk.backward(s.saved) : chunk.backward(s.doutput, s.saved);
        }
        s.doutput = Tensor();
        s.dinput = dx;  // undefined on the first stage
        if (a.op == PipelineOp::Backward) {
          s.backward_done = true;
          release(key);
        }
        break;
      }
      case PipelineOp::BackwardWeight:
        if (ddp) ddp->set_last_microbatch(m == M - 1);
        s.wgrad.run();
        s.backward_done = true;
        release(key);
        break;
      default:
        break;
    }
    compute_s += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  post();
  wait_posted();
  if (setup.times) {
    setup.times->compute_s += compute_s;
    setup.times->total_s += std::chrono::duration<double>(Clock::now() - t_start).count();
  }
  MT_CHECK(cfg.forward_only || slots.empty(), "pipeline rank {}: {} microbatch passes left unfinished", rank,
           slots.size());

  // The losses, on the last stage (summed over its context-parallel group), then on every pipeline rank.
  std::vector<double> means(size_t(M), 0.0);
  if (last_stage_here) means = microbatch_means(losses, masks, cfg);
  pp.all_reduce_f64(means.data(), M);
  return means;
}

}  // namespace mt
