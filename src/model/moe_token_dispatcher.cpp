#include "model/moe_token_dispatcher.h"

#include "core/error.h"
#include "kernels/moe_permute.h"

namespace mt {
namespace {

Tensor int32_on(const std::vector<int32_t>& v, Device d) {
  Tensor h = Tensor::empty({int64_t(v.size())}, DType::I32);
  std::copy(v.begin(), v.end(), h.data<int32_t>());
  return d.is_cpu() ? h : h.to(d);
}

// Rows of `rows` [R, C] reordered by `source` (new row -> old row; moe_permute with k = 1).
Tensor reorder(const Tensor& rows, const Tensor& source) {
  Tensor out = Tensor::empty(rows.shape(), rows.dtype(), rows.device());
  moe_permute(rows, source, 1, out);
  return out;
}

}  // namespace

MoETokenDispatcher::MoETokenDispatcher(const TransformerConfig& cfg, Communicator* ep)
    : cfg_(cfg), ep_(ep && ep->size() > 1 ? ep : nullptr) {
  ep_size_ = ep_ ? ep_->size() : 1;
  MT_CHECK(cfg.num_moe_experts % ep_size_ == 0, "{} experts do not split over {} expert-parallel ranks",
           cfg.num_moe_experts, ep_size_);
  local_experts_ = cfg.num_moe_experts / ep_size_;
  first_expert_ = (ep_ ? ep_->rank() : 0) * local_experts_;
}

Tensor MoEAlltoAllTokenDispatcher::dispatch(const Tensor& x, const std::vector<int32_t>& indices,
                                            const std::vector<float>& probs, Saved& s) const {
  const int64_t T = x.size(0), C = x.size(1);
  const int k = cfg_.moe_router_topk, L = local_experts_;
  s.tokens = T;
  const RoutingPlan plan = make_routing_plan(indices, probs, T, cfg_);
  s.row_map = int32_on(plan.row_map, x.device());
  s.row_source = int32_on(plan.row_source, x.device());
  Tensor hp = Tensor::empty({T, k}, DType::F32);
  std::copy(probs.begin(), probs.end(), hp.data<float>());
  s.probs = x.is_cuda() ? hp.to(x.device()) : hp;
  Tensor permuted = Tensor::empty({plan.rows(), C}, x.dtype(), x.device());
  moe_permute(x, s.row_source, k, permuted);
  if (!ep_) {
    s.rows_per_local_expert = plan.rows_per_expert;
    return permuted;
  }
  // Rows per (destination rank, its local expert), exchanged so each rank knows what it receives.
  const int P = ep_size_;
  Tensor send_counts = Tensor::empty({int64_t(P) * L}, DType::I64), recv_counts = Tensor::empty({int64_t(P) * L}, DType::I64);
  for (int e = 0; e < cfg_.num_moe_experts; ++e) send_counts.data<int64_t>()[e] = plan.rows_per_expert[size_t(e)];
  ep_->all_to_all(send_counts, recv_counts);
  s.send_rows.assign(size_t(P), 0);
  s.recv_rows.assign(size_t(P), 0);
  s.rows_per_local_expert.assign(size_t(L), 0);
  const int64_t* rc = recv_counts.data<int64_t>();
  for (int r = 0; r < P; ++r)
    for (int l = 0; l < L; ++l) {
      s.send_rows[size_t(r)] += plan.rows_per_expert[size_t(r * L + l)];
      s.recv_rows[size_t(r)] += rc[r * L + l];
      s.rows_per_local_expert[size_t(l)] += rc[r * L + l];
    }
  // Received rows come as (source rank, local expert); the experts want (local expert, source rank).
  std::vector<int64_t> start(size_t(P) * size_t(L));
  int64_t off = 0;
  for (int r = 0; r < P; ++r)
    for (int l = 0; l < L; ++l) {
      start[size_t(r * L + l)] = off;
      off += rc[r * L + l];
    }
  std::vector<int32_t> regroup, ungroup(static_cast<size_t>(off));
  regroup.reserve(size_t(off));
  for (int l = 0; l < L; ++l)
    for (int r = 0; r < P; ++r)
      for (int64_t i = 0; i < rc[r * L + l]; ++i) {
        ungroup[size_t(start[size_t(r * L + l)] + i)] = int32_t(regroup.size());
        regroup.push_back(int32_t(start[size_t(r * L + l)] + i));
      }
  s.regroup = int32_on(regroup, x.device());
  s.ungroup = int32_on(ungroup, x.device());
  return to_experts(permuted, s);
}

Tensor MoEAlltoAllTokenDispatcher::to_experts(const Tensor& rows, const Saved& s) const {
  if (!ep_) return rows;
  const int64_t C = rows.size(1);
  int64_t m = 0;
  for (int64_t n : s.recv_rows) m += n;
  Tensor received = Tensor::empty({m, C}, rows.dtype(), rows.device());
  std::vector<int64_t> sc(s.send_rows), rc(s.recv_rows);
  for (auto& v : sc) v *= C;
  for (auto& v : rc) v *= C;
  ep_->all_to_all_v(rows, sc, received, rc);
  return reorder(received, s.regroup);
}

Tensor MoEAlltoAllTokenDispatcher::from_experts(const Tensor& rows, const Saved& s) const {
  if (!ep_) return rows;
  const int64_t C = rows.size(1);
  Tensor back = Tensor::empty({s.row_source.numel(), C}, rows.dtype(), rows.device());
  std::vector<int64_t> sc(s.recv_rows), rc(s.send_rows);
  for (auto& v : sc) v *= C;
  for (auto& v : rc) v *= C;
  ep_->all_to_all_v(reorder(rows, s.ungroup), sc, back, rc);
  return back;
}

Tensor MoEAlltoAllTokenDispatcher::combine(const Tensor& expert_output, Saved& s) const {
  s.expert_output = from_experts(expert_output, s);
  Tensor out = Tensor::empty({s.tokens, expert_output.size(1)}, expert_output.dtype(), expert_output.device());
  moe_unpermute(s.expert_output, s.row_map, s.probs, out);
  return out;
}

Tensor MoEAlltoAllTokenDispatcher::combine_backward(const Tensor& dout, Saved& s, Tensor& dprobs) const {
  Tensor dy = Tensor::empty(s.expert_output.shape(), s.expert_output.dtype(), s.expert_output.device());
  dprobs = Tensor::empty(s.probs.shape(), DType::F32, s.probs.device());
  moe_unpermute_backward(dout, s.expert_output, s.row_map, s.row_source, s.probs, dy, dprobs);
  s.expert_output = Tensor();
  return to_experts(dy, s);
}

Tensor MoEAlltoAllTokenDispatcher::dispatch_backward(const Tensor& dinput, Saved& s) const {
  Tensor drows = from_experts(dinput, s);
  Tensor dx = Tensor::empty({s.tokens, dinput.size(1)}, dinput.dtype(), dinput.device());
  moe_permute_backward(drows, s.row_map, cfg_.moe_router_topk, dx);
  s = Saved{};
  return dx;
}

Tensor MoEAllGatherTokenDispatcher::gather(const Tensor& t) const {
  if (!ep_) return t;
  Shape shape = t.shape();
  shape[0] *= ep_size_;
  Tensor out = Tensor::empty(shape, t.dtype(), t.device());
  ep_->all_gather(t, out);
  return out;
}

Tensor MoEAllGatherTokenDispatcher::reduce_scatter(const Tensor& t) const {
  if (!ep_) return t;
  Shape shape = t.shape();
  shape[0] /= ep_size_;
  Tensor out = Tensor::empty(shape, t.dtype(), t.device());
  ep_->reduce_scatter(t, out);
  return out;
}

Tensor MoEAllGatherTokenDispatcher::dispatch(const Tensor& x, const std::vector<int32_t>& indices,
                                             const std::vector<float>& probs, Saved& s) const {
  const int64_t T = x.size(0), C = x.size(1), k = cfg_.moe_router_topk;
  const int P = ep_size_, L = local_experts_;
  s.tokens = T;
  // The group's routing on the host (rank order), its tokens on the device.
  Tensor hi = Tensor::empty({T * k}, DType::I32), hp = Tensor::empty({T * k}, DType::F32);
  std::copy(indices.begin(), indices.end(), hi.data<int32_t>());
  std::copy(probs.begin(), probs.end(), hp.data<float>());
  const Tensor all_i = gather(hi), all_p = gather(hp);
  const Tensor xg = gather(x);
  // Each source rank's plan (its capacity), then this rank's experts' rows: by local expert, then
  // source rank, then slot -- the order the alltoall dispatcher's regrouping gives.
  std::vector<RoutingPlan> plans;
  for (int r = 0; r < P; ++r) {
    const int32_t* ri = all_i.data<int32_t>() + r * T * k;
    const float* rp = all_p.data<float>() + r * T * k;
    plans.push_back(make_routing_plan(std::vector<int32_t>(ri, ri + T * k), std::vector<float>(rp, rp + T * k), T, cfg_));
  }
  std::vector<int32_t> row_map(size_t(P * T * k), -1), row_source;
  s.rows_per_local_expert.assign(size_t(L), 0);
  for (int l = 0; l < L; ++l) {
    const int e = first_expert_ + l;
    for (int r = 0; r < P; ++r) {
      const RoutingPlan& p = plans[size_t(r)];
      int64_t start = 0;
      for (int g = 0; g < e; ++g) start += p.rows_per_expert[size_t(g)];
      for (int64_t i = 0; i < p.rows_per_expert[size_t(e)]; ++i) {
        const int32_t slot = p.row_source[size_t(start + i)];
        const int32_t global = slot < 0 ? -1 : int32_t(r * T * k + slot);
        if (global >= 0) row_map[size_t(global)] = int32_t(row_source.size());
        row_source.push_back(global);
      }
      s.rows_per_local_expert[size_t(l)] += p.rows_per_expert[size_t(e)];
    }
  }
  s.row_map = int32_on(row_map, x.device());
  s.row_source = int32_on(row_source, x.device());
  s.probs = (x.is_cuda() ? all_p.to(x.device()) : all_p).view({P * T, k});
  Tensor rows = Tensor::empty({int64_t(row_source.size()), C}, x.dtype(), x.device());
  moe_permute(xg, s.row_source, int(k), rows);
  return rows;
}

Tensor MoEAllGatherTokenDispatcher::combine(const Tensor& expert_output, Saved& s) const {
  s.expert_output = expert_output;
  Tensor out = Tensor::empty({s.probs.size(0), expert_output.size(1)}, expert_output.dtype(), expert_output.device());
  moe_unpermute(expert_output, s.row_map, s.probs, out);  // this rank's experts' share of every token
  return reduce_scatter(out);
}

Tensor MoEAllGatherTokenDispatcher::combine_backward(const Tensor& dout, Saved& s, Tensor& dprobs) const {
  Tensor dy = Tensor::empty(s.expert_output.shape(), s.expert_output.dtype(), s.expert_output.device());
  Tensor dp = Tensor::empty(s.probs.shape(), DType::F32, s.probs.device());
  moe_unpermute_backward(gather(dout), s.expert_output, s.row_map, s.row_source, s.probs, dy, dp);
  dprobs = reduce_scatter(dp);  // each choice's gradient comes from the rank holding its expert
  s.expert_output = Tensor();
  return dy;
}

Tensor MoEAllGatherTokenDispatcher::dispatch_backward(const Tensor& dinput, Saved& s) const {
  Tensor dxg = Tensor::empty({s.probs.size(0), dinput.size(1)}, dinput.dtype(), dinput.device());
  moe_permute_backward(dinput, s.row_map, cfg_.moe_router_topk, dxg);
  s = Saved{};
  return reduce_scatter(dxg);
}

std::unique_ptr<MoETokenDispatcher> make_token_dispatcher(const TransformerConfig& cfg, Communicator* ep) {
  if (cfg.moe_token_dispatcher_type == MoeTokenDispatcher::AllGather)
    return std::make_unique<MoEAllGatherTokenDispatcher>(cfg, ep);
  return std::make_unique<MoEAlltoAllTokenDispatcher>(cfg, ep);
}

}  // namespace mt
