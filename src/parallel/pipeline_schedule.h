#pragma once
// Pipeline schedules as data: for each pipeline rank, the list of actions it performs in one
// iteration — compute (forward, backward, or backward split into its input-gradient and
// weight-gradient passes) and the point-to-point transfers between neighbouring stages. One
// executor (schedules.h) runs any of them; the lists can be printed, checked and reasoned about
// apart from the execution.
//
// Stages: with P pipeline ranks and V model chunks per rank (virtual stages), the model is cut
// into S = P V stages; stage s lives on rank s % P as its chunk s / P, so activations flow
// 0 -> 1 -> ... -> P-1 -> 0 (next chunk) -> ... Microbatch m's forward on stage s needs stage
// s - 1's output for m; its backward needs stage s + 1's input gradient for m.
//
// Transfers are derived from the compute order. Computes form steps (a forward or backward;
// in the interleaved steady state a forward and a backward together); the transfers between two
// steps form one batch (Communicator::batch_send_recv) holding the sends of the step before and
// the receives of the step after. A batch is posted where it stands, right after the step before
// (ZB-H1's deferred W passes run while it is in flight), and waited for before the next forward
// or backward pass (and at the end of the iteration). verify_pipeline_schedule proves a schedule
// deadlock-free under the strictest semantics, rendezvous (a transfer completes only once both
// ends have posted it, as NCCL's may), which covers MPI's.
#include <string>
#include <vector>

namespace mt {

enum class PipelineScheduleKind {
  OneFOneB,     // 1F1B (V = 1) or interleaved 1F1B (V > 1): Megatron-Core's schedules
  ZeroBubbleH1  // ZB-H1 (V = 1): backward split into B (input grad) and W (weight grad), W fills bubbles
};

enum class PipelineOp : unsigned char {
  Forward,
  Backward,        // input and weight gradients
  BackwardInput,   // B: the input gradient (and what the next stage down needs)
  BackwardWeight,  // W: the deferred weight-gradient GEMMs
  SendForward,     // this chunk's output to the next stage
  RecvForward,     // this chunk's input from the previous stage
  SendBackward,    // this chunk's input gradient to the previous stage
  RecvBackward     // this chunk's output gradient from the next stage
};

struct PipelineAction {
  PipelineOp op;
  int microbatch;
  int chunk;      // model chunk on this rank (virtual stage index)
  int peer = -1;  // transfers: the pipeline rank at the other end

  bool is_compute() const { return op <= PipelineOp::BackwardWeight; }
  bool operator==(const PipelineAction&) const = default;
};

struct PipelineSchedule {
  PipelineScheduleKind kind = PipelineScheduleKind::OneFOneB;
  int pipeline_size = 1, num_chunks = 1, num_microbatches = 1;
  bool forward_only = false;  // evaluation: forwards and their transfers only
  std::vector<std::vector<PipelineAction>> ranks;  // [pipeline rank] -> actions in order
};

// "1f1b" / "interleaved" (accepted for Megatron's naming; 1F1B with V > 1) / "zb-h1"; false otherwise.
bool parse_pipeline_schedule(const std::string& name, PipelineScheduleKind& out);
const char* pipeline_schedule_name(PipelineScheduleKind kind, int num_chunks);

// Empty when (P, M, V) suit the schedule, else why not, naming the flags (Megatron's constraints:
// interleaving needs P > 1 and M a multiple of P; ZB-H1 takes no virtual stages).
std::string pipeline_schedule_problem(PipelineScheduleKind kind, int P, int M, int V);

// The schedule for P ranks, M microbatches and V chunks per rank (a problem above is an error):
//   1F1B (V = 1): rank r runs min(P - r - 1, M) warm-up forwards, then alternates one forward
//     and one backward, then drains the backwards;
//   interleaved (V > 1): Megatron's order over the M V virtual microbatches (groups of P
//     microbatches per chunk; chunks in forward order for forwards, reverse for backwards;
//     (P - r - 1) 2 + (V - 1) P warm-up forwards; all forwards first when M = P);
//   ZB-H1: the order a list scheduler gives with unit-time F, B and W passes on rank r: a W
//     when P - r are deferred, else B when its gradient is there, else F while fewer than
//     P - r microbatches wait for their B (1F1B's peak of full activations), else a deferred W.
//     With equal F, B and W times its bubble is (P - 1)(F + B) against 1F1B's (P - 1)(F + B + W).
//     (The paper's ZB-H1 reaches (P - 1)(F + B - W) by deferring more W passes on the last
//     stages; the bound of P - r deferred passes keeps their memory at 1F1B's count.) A deferred W holds what its GEMMs read (the
//     linear layers' inputs and output gradients), not the whole activation set.
// forward_only: every forward in the schedule's forward order, nothing else (evaluation).
PipelineSchedule build_pipeline_schedule(PipelineScheduleKind kind, int P, int M, int V, bool forward_only = false);

// What verify_pipeline_schedule proves.
struct PipelineScheduleCheck {
  std::string problem;  // empty: the schedule is sound
  // Per rank: the most microbatch-chunks whose activations are held at once (forward done, its
  // backward or input-gradient pass not yet), the most input-gradient passes whose weight
  // gradients are deferred at once, and the transfer batches posted.
  std::vector<int> peak_activations;
  std::vector<int> peak_deferred_weight_grads;
  std::vector<int> batches;
  bool ok() const { return problem.empty(); }
};

// Checks, for every rank: each (microbatch, chunk) has one forward, then one backward (or one
// B then one W); a forward's input was received before it (stages after the first) and its
// output sent after it (stages before the last), likewise for backwards; the i-th message from
// rank a to rank b is the one b expects i-th; and a rendezvous simulation of all ranks runs to the
// end (no deadlock).
PipelineScheduleCheck verify_pipeline_schedule(const PipelineSchedule& s);

// Each rank's idle fraction of the iteration (1 - its compute time / the last rank's finish) when
// every forward takes f, every input-gradient pass b and every weight-gradient pass w (a whole
// backward b + w) and transfers take no time: the analytic bubble of the schedule, against
// which the measured one is compared (1F1B: (P - 1) / (M + P - 1) on every rank).
std::vector<double> simulated_idle_fraction(const PipelineSchedule& s, double f, double b, double w);

// "F0.0 S>0.0 ..." style rendering of one rank's actions, for messages and --help examples:
// F m.c forward, B / Bi / W backward (whole / input / weight), and for transfers sf/rf/sb/rb
// (send/recv forward/backward) with the microbatch and chunk; a batch is bracketed.
std::string format_pipeline_actions(const std::vector<PipelineAction>& actions);

}  // namespace mt
