#include "parallel/pipeline_schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>

#include "core/error.h"

namespace mt {

bool parse_pipeline_schedule(const std::string& name, PipelineScheduleKind& out) {
  if (name == "1f1b" || name == "interleaved") {
    out = PipelineScheduleKind::OneFOneB;
    return true;
  }
  if (name == "zb-h1") {
    out = PipelineScheduleKind::ZeroBubbleH1;
    return true;
  }
  return false;
}

const char* pipeline_schedule_name(PipelineScheduleKind kind, int num_chunks) {
  if (kind == PipelineScheduleKind::ZeroBubbleH1) return "zero-bubble ZB-H1";
  return num_chunks > 1 ? "interleaved 1F1B" : "1F1B";
}

std::string pipeline_schedule_problem(PipelineScheduleKind kind, int P, int M, int V) {
  if (P < 1 || M < 1 || V < 1)
    return fmt::format("pipeline size {}, {} microbatches and {} virtual stages must all be positive", P, M, V);
  if (kind == PipelineScheduleKind::ZeroBubbleH1 && V > 1)
    return "--pipeline-schedule zb-h1 takes no virtual stages (--num-virtual-stages-per-pipeline-rank 1)";
  if (V > 1 && P < 2) return "virtual pipeline stages need --pipeline-model-parallel-size of at least 2";
  if (V > 1 && M % P != 0)
    return fmt::format(
        "the interleaved schedule needs the number of microbatches per iteration ({} = global batch / (micro batch "
        "x data parallel)) to be a multiple of --pipeline-model-parallel-size {}",
        M, P);
  return {};
}

namespace {

struct Compute {
  PipelineOp op;
  int m, v;
  bool joins_previous = false;  // same step as the compute before it: no transfers between them
};

// 1F1B (V = 1) and Megatron's interleaved order (V > 1), for rank r.
std::vector<Compute> one_f_one_b_order(int P, int M, int V, int r) {
  const int N = M * V;
  auto chunk = [&](int k, bool forward) {
    const int c = (k % (P * V)) / P;
    return forward ? c : V - 1 - c;
  };
  auto micro = [&](int k) { return V == 1 ? k : (k / (P * V)) * P + k % P; };
  int warmup;
  if (V == 1)
    warmup = std::min(P - r - 1, M);
  else
    warmup = M == P ? N : std::min((P - r - 1) * 2 + (V - 1) * P, N);
  std::vector<Compute> out;
  for (int k = 0; k < warmup; ++k) out.push_back({PipelineOp::Forward, micro(k), chunk(k, true)});
  for (int i = 0; i < N - warmup; ++i) {
    out.push_back({PipelineOp::Forward, micro(warmup + i), chunk(warmup + i, true)});
    // Interleaved steady state: a forward and a backward form one step, their transfers one
    // batch before and after it (Megatron's send_forward_backward_recv_forward_backward). With
    // transfers between them the two directions can wait on each other around the ring.
    out.push_back({PipelineOp::Backward, micro(i), chunk(i, false), V > 1});
  }
  for (int k = N - warmup; k < N; ++k) out.push_back({PipelineOp::Backward, micro(k), chunk(k, false)});
  return out;
}

// ZB-H1 by list scheduling with unit-time passes (see the header), all ranks at once.
std::vector<std::vector<Compute>> zb_h1_order(int P, int M) {
  constexpr int kNever = 1 << 30;
  std::vector<std::vector<int>> f_done(size_t(P), std::vector<int>(size_t(M), kNever));
  std::vector<std::vector<int>> b_done = f_done;
  std::vector<int> nf(size_t(P), 0), nb(size_t(P), 0), held(size_t(P), 0);
  std::vector<std::deque<int>> w(static_cast<size_t>(P));
  std::vector<std::vector<Compute>> out(static_cast<size_t>(P));
  const size_t total = size_t(3 * M);
  for (int t = 0;; ++t) {
    bool all = true;
    for (int r = 0; r < P; ++r) all = all && out[size_t(r)].size() == total;
    if (all) break;
    MT_CHECK(t < 16 * (M + P) + 16, "ZB-H1 list scheduling did not finish");
    for (int r = 0; r < P; ++r) {
      auto& o = out[size_t(r)];
      const size_t ru = size_t(r);
      const int b = nb[ru], f = nf[ru];
      const int b_ready = b < f ? (r == P - 1 ? f_done[ru][size_t(b)] : b_done[ru + 1][size_t(b)]) : kNever;
      const int f_ready = f < M ? (r == 0 ? 0 : f_done[ru - 1][size_t(f)]) : kNever;
      if (int(w[ru].size()) >= P - r) {  // as many deferred W as 1F1B's activations: one now
        o.push_back({PipelineOp::BackwardWeight, w[ru].front(), 0});
        w[ru].pop_front();
      } else if (b_ready <= t) {
        o.push_back({PipelineOp::BackwardInput, b, 0});
        b_done[ru][size_t(b)] = t + 1;
        w[ru].push_back(b);
        --held[ru];
        ++nb[ru];
      } else if (f_ready <= t && held[ru] < P - r) {
        o.push_back({PipelineOp::Forward, f, 0});
        f_done[ru][size_t(f)] = t + 1;
        ++held[ru];
        ++nf[ru];
      } else if (!w[ru].empty()) {
        o.push_back({PipelineOp::BackwardWeight, w[ru].front(), 0});
        w[ru].pop_front();
      }
    }
  }
  return out;
}

}  // namespace

PipelineSchedule build_pipeline_schedule(PipelineScheduleKind kind, int P, int M, int V, bool forward_only) {
  const std::string problem = pipeline_schedule_problem(kind, P, M, V);
  MT_CHECK(problem.empty(), "{}", problem);
  PipelineSchedule s;
  s.kind = kind;
  s.pipeline_size = P;
  s.num_chunks = V;
  s.num_microbatches = M;
  s.forward_only = forward_only;
  std::vector<std::vector<Compute>> order;
  if (forward_only) {
    for (int r = 0; r < P; ++r) {
      order.emplace_back();
      for (const Compute& c : one_f_one_b_order(P, M, V, r))
        if (c.op == PipelineOp::Forward) order.back().push_back({c.op, c.m, c.v});
    }
  } else if (kind == PipelineScheduleKind::ZeroBubbleH1) {
    order = zb_h1_order(P, M);
  } else {
    for (int r = 0; r < P; ++r) order.push_back(one_f_one_b_order(P, M, V, r));
  }
  const int S = P * V;
  for (int r = 0; r < P; ++r) {
    const int next = (r + 1) % P, prev = (r + P - 1) % P;
    auto stage = [&](int v) { return v * P + r; };
    auto sends = [&](const Compute& c, std::vector<PipelineAction>& a) {
      if (c.op == PipelineOp::Forward && stage(c.v) < S - 1) a.push_back({PipelineOp::SendForward, c.m, c.v, next});
      if ((c.op == PipelineOp::Backward || c.op == PipelineOp::BackwardInput) && stage(c.v) > 0)
        a.push_back({PipelineOp::SendBackward, c.m, c.v, prev});
    };
    auto recvs = [&](const Compute& c, std::vector<PipelineAction>& a) {
      if (c.op == PipelineOp::Forward && stage(c.v) > 0) a.push_back({PipelineOp::RecvForward, c.m, c.v, prev});
      if ((c.op == PipelineOp::Backward || c.op == PipelineOp::BackwardInput) && stage(c.v) < S - 1)
        a.push_back({PipelineOp::RecvBackward, c.m, c.v, next});
    };
    // Steps: runs of computes holding F or B passes (W passes have no transfers and stand
    // outside steps). The batch between two steps holds the sends of the step before and the
    // receives of the step after; it is posted right after the step before (ahead of any W
    // passes, which run while it is in flight) and waited for before the step after.
    std::vector<PipelineAction> acts;
    const auto& o = order[size_t(r)];
    std::vector<Compute> last_step;
    for (size_t i = 0; i < o.size();) {
      if (o[i].op == PipelineOp::BackwardWeight) {
        acts.push_back({o[i].op, o[i].m, o[i].v});
        ++i;
        continue;
      }
      size_t end = i + 1;
      while (end < o.size() && o[end].joins_previous) ++end;
      // The batch goes where the previous step ended (before the W passes since).
      std::vector<PipelineAction> batch;
      for (const Compute& c : last_step) sends(c, batch);
      for (size_t j = i; j < end; ++j) recvs(o[j], batch);
      size_t at = acts.size();
      while (at > 0 && acts[at - 1].op == PipelineOp::BackwardWeight) --at;
      acts.insert(acts.begin() + std::ptrdiff_t(at), batch.begin(), batch.end());
      last_step.assign(o.begin() + std::ptrdiff_t(i), o.begin() + std::ptrdiff_t(end));
      for (size_t j = i; j < end; ++j) acts.push_back({o[j].op, o[j].m, o[j].v});
      i = end;
    }
    {
      std::vector<PipelineAction> batch;
      for (const Compute& c : last_step) sends(c, batch);
      size_t at = acts.size();
      while (at > 0 && acts[at - 1].op == PipelineOp::BackwardWeight) --at;
      acts.insert(acts.begin() + std::ptrdiff_t(at), batch.begin(), batch.end());
    }
    s.ranks.push_back(std::move(acts));
  }
  return s;
}

namespace {

const char* op_code(PipelineOp op) {
  switch (op) {
    case PipelineOp::Forward: return "F";
    case PipelineOp::Backward: return "B";
    case PipelineOp::BackwardInput: return "Bi";
    case PipelineOp::BackwardWeight: return "W";
    case PipelineOp::SendForward: return "sf";
    case PipelineOp::RecvForward: return "rf";
    case PipelineOp::SendBackward: return "sb";
    case PipelineOp::RecvBackward: return "rb";
  }
  return "?";
}

bool is_send(PipelineOp op) { return op == PipelineOp::SendForward || op == PipelineOp::SendBackward; }

}  // namespace

std::string format_pipeline_actions(const std::vector<PipelineAction>& actions) {
  std::string out;
  bool in_batch = false;
  for (const auto& a : actions) {
    if (a.is_compute() && in_batch) {
      out += "]";
      in_batch = false;
    }
    if (!out.empty()) out += " ";
    if (!a.is_compute() && !in_batch) {
      out += "[";
      in_batch = true;
    }
    out += fmt::format("{}{}.{}", op_code(a.op), a.microbatch, a.chunk);
  }
  if (in_batch) out += "]";
  return out;
}

std::vector<double> simulated_idle_fraction(const PipelineSchedule& s, double f, double b, double w) {
  const int P = s.pipeline_size, V = s.num_chunks, S = P * V;
  // When each message leaves: (direction, microbatch, sending stage) -> the sender's clock when
  // it posts the batch holding the send (its computes before it done).
  std::map<std::tuple<int, int, int>, double> sent;
  std::vector<size_t> pc(size_t(P), 0);
  std::vector<double> clock(size_t(P), 0.0), busy(size_t(P), 0.0), arrival(size_t(P), 0.0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < P; ++r) {
      const auto& acts = s.ranks[size_t(r)];
      for (size_t& i = pc[size_t(r)]; i < acts.size(); ++i) {
        const PipelineAction& a = acts[i];
        const int stage = a.chunk * P + r;
        if (a.op == PipelineOp::SendForward || a.op == PipelineOp::SendBackward) {
          sent[{a.op == PipelineOp::SendForward ? 0 : 1, a.microbatch, stage}] = clock[size_t(r)];
        } else if (a.op == PipelineOp::RecvForward || a.op == PipelineOp::RecvBackward) {
          const bool fwd = a.op == PipelineOp::RecvForward;
          auto it = sent.find({fwd ? 0 : 1, a.microbatch, fwd ? stage - 1 : stage + 1});
          if (it == sent.end()) break;
          arrival[size_t(r)] = std::max(arrival[size_t(r)], it->second);
        } else {
          // The batch in flight is waited for before the next F or B pass.
          if (a.op != PipelineOp::BackwardWeight) clock[size_t(r)] = std::max(clock[size_t(r)], arrival[size_t(r)]);
          const double cost = a.op == PipelineOp::Forward         ? f
                              : a.op == PipelineOp::Backward      ? b + w
                              : a.op == PipelineOp::BackwardInput ? b
                                                                  : w;
          clock[size_t(r)] += cost;
          busy[size_t(r)] += cost;
        }
        progress = true;
      }
    }
  }
  for (int r = 0; r < P; ++r)
    MT_CHECK(pc[size_t(r)] == s.ranks[size_t(r)].size(), "simulated_idle_fraction: rank {} cannot finish", r);
  (void)S;
  const double end = *std::max_element(clock.begin(), clock.end());
  std::vector<double> idle;
  for (int r = 0; r < P; ++r) idle.push_back(end > 0 ? 1.0 - busy[size_t(r)] / end : 0.0);
  return idle;
}

PipelineScheduleCheck verify_pipeline_schedule(const PipelineSchedule& s) {
  PipelineScheduleCheck check;
  const int P = s.pipeline_size, V = s.num_chunks, M = s.num_microbatches, S = P * V;
  check.peak_activations.assign(size_t(P), 0);
  check.batches.assign(size_t(P), 0);
  check.peak_deferred_weight_grads.assign(size_t(P), 0);
  if (int(s.ranks.size()) != P) {
    check.problem = fmt::format("{} rank lists for {} ranks", s.ranks.size(), P);
    return check;
  }
  // A message: direction (0 forward, 1 backward), microbatch, sending stage.
  using Msg = std::tuple<int, int, int>;
  std::map<std::pair<int, int>, std::vector<Msg>> sent, expected;  // (from, to) -> in order
  for (int r = 0; r < P; ++r) {
    const auto& acts = s.ranks[size_t(r)];
    std::map<std::pair<int, int>, int> state;  // (m, v) -> 0 none, 1 F, 2 B or Bi, 3 W / whole B
    std::map<std::pair<int, int>, int> received_f, received_b, sent_f, sent_b;
    int held = 0, deferred = 0;
    auto fail = [&](const PipelineAction& a, const char* what) {
      check.problem = fmt::format("rank {}: {} at {}{}.{} ({})", r, what, op_code(a.op), a.microbatch, a.chunk,
                                  format_pipeline_actions(acts));
    };
    for (size_t i = 0; i < acts.size(); ++i) {
      const auto& a = acts[i];
      if (i > 0 && !a.is_compute() && acts[i - 1].is_compute()) ++check.batches[size_t(r)];
      if (i == 0 && !a.is_compute()) ++check.batches[size_t(r)];
      if (a.microbatch < 0 || a.microbatch >= M || a.chunk < 0 || a.chunk >= V) {
        fail(a, "microbatch or chunk out of range");
        return check;
      }
      const int stage = a.chunk * P + r;
      const std::pair<int, int> key{a.microbatch, a.chunk};
      int& st = state[key];
      switch (a.op) {
        case PipelineOp::Forward:
          if (st != 0) return fail(a, "second forward"), check;
          if (stage > 0 && !received_f[key]) return fail(a, "forward before its input was received"), check;
          st = 1;
          check.peak_activations[size_t(r)] = std::max(check.peak_activations[size_t(r)], ++held);
          break;
        case PipelineOp::Backward:
        case PipelineOp::BackwardInput:
          if (s.forward_only) return fail(a, "backward in a forward-only schedule"), check;
          if (st != 1) return fail(a, "backward without a forward before it, or twice"), check;
          if (stage < S - 1 && !received_b[key]) return fail(a, "backward before its output gradient was received"), check;
          st = a.op == PipelineOp::Backward ? 3 : 2;
          --held;
          if (a.op == PipelineOp::BackwardInput)
            check.peak_deferred_weight_grads[size_t(r)] = std::max(check.peak_deferred_weight_grads[size_t(r)], ++deferred);
          break;
        case PipelineOp::BackwardWeight:
          if (st != 2) return fail(a, "weight-gradient pass without its input-gradient pass before it"), check;
          st = 3;
          --deferred;
          break;
        case PipelineOp::SendForward:
          if (st < 1 || sent_f[key]++) return fail(a, "send of an output not computed, or twice"), check;
          break;
        case PipelineOp::SendBackward:
          if (st < 2 || sent_b[key]++) return fail(a, "send of an input gradient not computed, or twice"), check;
          break;
        case PipelineOp::RecvForward:
          if (received_f[key]++) return fail(a, "input received twice"), check;
          break;
        case PipelineOp::RecvBackward:
          if (received_b[key]++) return fail(a, "output gradient received twice"), check;
          break;
      }
      if (!a.is_compute()) {
        const int dir = a.op == PipelineOp::SendForward || a.op == PipelineOp::RecvForward ? 0 : 1;
        const int want_peer = (a.op == PipelineOp::SendForward || a.op == PipelineOp::RecvBackward) ? (r + 1) % P
                                                                                                     : (r + P - 1) % P;
        if (a.peer != want_peer) return fail(a, "transfer with the wrong neighbour"), check;
        if (is_send(a.op)) {
          sent[{r, a.peer}].push_back({dir, a.microbatch, stage});
        } else {
          const int from_stage = dir == 0 ? stage - 1 : stage + 1;
          if (from_stage < 0 || from_stage >= S) return fail(a, "receive from beyond the first or last stage"), check;
          expected[{a.peer, r}].push_back({dir, a.microbatch, from_stage});
        }
      }
    }
    for (const auto& [key, st] : state)
      if (st != (s.forward_only ? 1 : 3)) {
        check.problem = fmt::format("rank {}: microbatch {} chunk {} is not fully backpropagated", r, key.first,
                                    key.second);
        return check;
      }
    if (int(state.size()) != M * V) {
      check.problem = fmt::format("rank {}: {} microbatch-chunks of {} computed", r, state.size(), M * V);
      return check;
    }
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < V; ++v) {
        const int stage = v * P + r;
        if (stage < S - 1 && !sent_f[{m, v}]) {
          check.problem = fmt::format("rank {}: the output of microbatch {} chunk {} is never sent", r, m, v);
          return check;
        }
        if (stage > 0 && !s.forward_only && !sent_b[{m, v}]) {
          check.problem = fmt::format("rank {}: the input gradient of microbatch {} chunk {} is never sent", r, m, v);
          return check;
        }
      }
  }
  // In-order matching per (sender, receiver).
  for (const auto& [ch, msgs] : sent) {
    const auto& want = expected[ch];
    if (msgs != want) {
      check.problem = fmt::format("rank {} sends to rank {} {} messages in an order rank {} does not receive them",
                                  ch.first, ch.second, msgs.size(), ch.second);
      return check;
    }
  }
  for (const auto& [ch, want] : expected)
    if (!sent.count(ch) && !want.empty()) {
      check.problem = fmt::format("rank {} expects messages rank {} never sends", ch.second, ch.first);
      return check;
    }
  // Rendezvous simulation: a rank posts the whole batch it stands at; a transfer completes when
  // both ends are posted; a rank leaves its batch when all of its transfers completed.
  std::map<std::pair<int, int>, std::vector<char>> posted_send, posted_recv;
  for (const auto& [ch, msgs] : sent) {
    posted_send[ch].assign(msgs.size(), 0);
    posted_recv[ch].assign(msgs.size(), 0);
  }
  std::vector<size_t> pc(size_t(P), 0);
  // The index of each transfer within its channel.
  std::vector<std::vector<int>> index(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    std::map<std::pair<int, int>, int> n;
    for (const auto& a : s.ranks[size_t(r)])
      index[size_t(r)].push_back(a.is_compute() ? -1 : n[is_send(a.op) ? std::pair{r, a.peer} : std::pair{a.peer, r}]++);
  }
  // Per rank: the posted batch not yet waited for, as action indices.
  std::vector<std::vector<size_t>> in_flight(static_cast<size_t>(P));
  auto complete = [&](int r, size_t j) {
    const auto& a = s.ranks[size_t(r)][j];
    const bool send = is_send(a.op);
    const std::pair<int, int> ch = send ? std::pair{r, a.peer} : std::pair{a.peer, r};
    return (send ? posted_recv : posted_send)[ch][size_t(index[size_t(r)][j])] != 0;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < P; ++r) {
      const auto& acts = s.ranks[size_t(r)];
      while (pc[size_t(r)] < acts.size()) {
        const size_t i = pc[size_t(r)];
        const auto& a = acts[i];
        if (!a.is_compute()) {  // post
          const bool send = is_send(a.op);
          const std::pair<int, int> ch = send ? std::pair{r, a.peer} : std::pair{a.peer, r};
          (send ? posted_send : posted_recv)[ch][size_t(index[size_t(r)][i])] = 1;
          in_flight[size_t(r)].push_back(i);
          ++pc[size_t(r)];
          progress = true;
          continue;
        }
        if (a.op != PipelineOp::BackwardWeight && !in_flight[size_t(r)].empty()) {  // wait
          bool done = true;
          for (size_t j : in_flight[size_t(r)]) done = done && complete(r, j);
          if (!done) break;
          in_flight[size_t(r)].clear();
        }
        ++pc[size_t(r)];
        progress = true;
      }
    }
  }
  // The last batch is waited for at the end of the iteration.
  for (int r = 0; r < P; ++r)
    for (size_t j : in_flight[size_t(r)])
      if (!complete(r, j)) pc[size_t(r)] = j;
  for (int r = 0; r < P; ++r)
    if (pc[size_t(r)] < s.ranks[size_t(r)].size()) {
      std::string stuck;
      for (int q = 0; q < P; ++q) {
        const auto& acts = s.ranks[size_t(q)];
        if (pc[size_t(q)] >= acts.size()) continue;
        const auto& a = acts[pc[size_t(q)]];
        stuck += fmt::format("{}rank {} at {}{}.{}", stuck.empty() ? "" : ", ", q, op_code(a.op), a.microbatch, a.chunk);
      }
      check.problem = "deadlock: " + stuck;
      return check;
    }
  return check;
}

}  // namespace mt
