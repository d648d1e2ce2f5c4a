#include "model/tensor_parallel.h"

#include <memory>
#include <vector>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "model/weight_grad_store.h"

namespace mt {

namespace {

// Sequence parallelism: each of tp ranks holds n / tp of the n token rows.
int64_t rows_per_rank(int64_t n, int tp) {
  MT_CHECK(n % tp == 0, "sequence parallel: {} tokens do not split over {} ranks", n, tp);
  return n / tp;
}

}  // namespace

Tensor gather_tokens(const Tensor& x, Communicator& tp) {
  const int64_t n = x.size(0), c = x.numel() / n;
  Tensor out = Tensor::empty({n * tp.size(), c}, x.dtype(), x.device());
  tp.all_gather(x, out);
  return out;
}

Tensor reduce_scatter_tokens(const Tensor& x, Communicator& tp) {
  const int64_t n = x.size(0), c = x.numel() / n;
  Tensor out = Tensor::empty({rows_per_rank(n, tp.size()), c}, x.dtype(), x.device());
  tp.reduce_scatter(x, out);
  return out;
}

void gather_tokens_blockwise(const Tensor& x, const Tensor& out, Communicator& tp,
                             const std::function<void(int64_t, int64_t)>& use) {
  const int64_t n = x.size(0);
  const int size = tp.size(), me = tp.rank();
  MT_CHECK(out.size(0) == n * size && out.numel() == x.numel() * size, "gather_tokens_blockwise: x {}, out {}",
           x.str(), out.str());
  out.narrow0(me * n, n).copy_from(x);
  std::vector<std::unique_ptr<CommHandle>> work(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) work[size_t(r)] = tp.broadcast_async(out.narrow0(r * n, n), r);  // same order everywhere
  use(me * n, n);
  for (int k = 1; k < size; ++k) {
    const int r = (me + k) % size;
    work[size_t(r)]->wait();
    use(r * n, n);
  }
  work[size_t(me)]->wait();  // this rank's own send: ordered before anything frees out
}

ColumnParallelLinear::ColumnParallelLinear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out,
                                           const ModelParallelConfig& par, bool bias, int parts)
    : buf_(buf), par_(par), in_(in) {
  const int tp = par.tp_size(), r = par.tp_rank();
  MT_CHECK(parts >= 1 && out % (parts * tp) == 0, "{}: {} output features ({} parts) do not split over {} ranks",
           prefix, out, parts, tp);
  out_ = out / tp;
  if (parts == 1) {
    w_ = buf.add_shard(prefix + ".weight", {out_, in}, {out, in}, 0, int64_t(r) * out_, false);
    if (bias) b_ = buf.add_shard(prefix + ".bias", {out_}, {out}, 0, int64_t(r) * out_, true);
  } else {
    // Stacked parts, each split over TP: global [parts, out / parts, in], this rank's slice along
    // dim 1, so its rows are [part 0's share; part 1's share; ..] and one GEMM computes them all.
    const int64_t part = out / parts, local = part / tp;
    w_ = buf.add_shard(prefix + ".weight", {parts, local, in}, {parts, part, in}, 1, int64_t(r) * local, false);
    if (bias) b_ = buf.add_shard(prefix + ".bias", {parts, local}, {parts, part}, 1, int64_t(r) * local, true);
  }
  buf.set_overwrites_first_grad(w_);  // backward's wgrad GEMM takes grad_beta
}

void ColumnParallelLinear::init(float std, uint64_t seed) const {
  init_normal(buf_, w_, std, seed);
  if (b_ >= 0) fill(buf_.param(b_), 0.0f);
}

int64_t ColumnParallelLinear::input_rows(const Tensor& x) const {
  const int64_t n = x.numel() / in_;
  return par_.sequence_parallel ? n * par_.tp_size() : n;
}

void ColumnParallelLinear::for_input_rows(const Tensor& x, Saved& s,
                                          const std::function<void(int64_t, int64_t)>& rows) const {
  Tensor x2 = x.view({x.numel() / in_, in_});
  if (!par_.sequence_parallel || par_.tp_size() == 1) {
    s.x = x2;
  } else if (!par_.tp_comm_overlap) {
    s.x = gather_tokens(x2, *par_.tp);
  } else {
    s.x = Tensor::empty({input_rows(x), in_}, x.dtype(), x.device());
    gather_tokens_blockwise(x2, s.x, *par_.tp, rows);
    return;
  }
  rows(0, s.x.size(0));
}

void ColumnParallelLinear::restore_input(const Tensor& x, Saved& s) const {
  Tensor x2 = x.view({x.numel() / in_, in_});
  s.x = par_.sequence_parallel && par_.tp_size() > 1 ? gather_tokens(x2, *par_.tp) : x2;
}

Tensor ColumnParallelLinear::forward(const Tensor& x, Saved& s, Epilogue epilogue, Tensor* pre) const {
  const int64_t n = input_rows(x);
  if (epilogue != Epilogue::None) {
    MT_CHECK(pre, "ColumnParallelLinear: an epilogue keeps its pre-activation");
    *pre = Tensor::empty({n, out_}, x.dtype(), x.device());
  }
  Tensor y = Tensor::empty({n, out_}, x.dtype(), x.device());
  Tensor b = b_ >= 0 ? bias() : Tensor();
  if (epilogue == Epilogue::Gelu) {
    for_input_rows(x, s, [&](int64_t r0, int64_t k) {
      gemm_bias_gelu(s.x.narrow0(r0, k), false, weight(), true, b_ >= 0 ? &b : nullptr, pre->narrow0(r0, k),
                     y.narrow0(r0, k));
    });
    return y;
  }
  for_input_rows(x, s, [&](int64_t r0, int64_t k) {
    gemm(s.x.narrow0(r0, k), false, weight(), true, y.narrow0(r0, k), 1.0f, 0.0f, b_ >= 0 ? &b : nullptr);
  });
  return y;
}

Tensor ColumnParallelLinear::backward(const Tensor& dy, Saved& s, bool with_bias_grad) const {
  const int64_t n = s.x.size(0);
  Tensor dy2 = dy.view({n, out_});
  Tensor dx = Tensor::empty({n, in_}, s.x.dtype(), s.x.device());
  gemm(dy2, false, weight(), false, dx);  // dx = dy W (partial over TP)
  // dx's reduction over TP: started before the weight-gradient GEMM and waited for after it when
  // asynchronous (on GPUs the two overlap), else after the GEMM.
  const bool reduce = par_.tp_size() > 1, async = reduce && (par_.async_tp_allreduce || par_.tp_comm_overlap);
  const bool scatter = reduce && par_.sequence_parallel;
  Tensor out = scatter ? Tensor::empty({rows_per_rank(n, par_.tp_size()), in_}, dx.dtype(), dx.device()) : dx;
  std::unique_ptr<CommHandle> work;
  if (async) work = scatter ? par_.tp->reduce_scatter_async(dx, out) : par_.tp->all_reduce_async(dx);
  const bool bias_grad_here = b_ >= 0 && with_bias_grad;
  auto wgrad = [this, bias_grad_here](const Tensor& dy, const Tensor& x) {
    if (bias_grad_here)
      gemm_wgrad_bgrad(dy, x, weight_grad(), bias_grad(), buf_.grad_beta(w_));  // dW += dy^T x, db += sum dy
    else
      gemm(dy, true, x, false, weight_grad(), 1.0f, buf_.grad_beta(w_));
  };
  if (WeightGradStore::active())
    WeightGradStore::active()->defer([wgrad, dy = dy2.to(dy2.device()), x = s.x.to(s.x.device())] { wgrad(dy, x); });
  else
    wgrad(dy2, s.x);
  s = Saved{};
  if (reduce && !async) {
    if (scatter)
      par_.tp->reduce_scatter(dx, out);
    else
      par_.tp->all_reduce(dx);
  }
  if (work) work->wait();
  return out;
}

Tensor ColumnParallelLinear::weight() const { return buf_.param(w_).view({out_, in_}); }
Tensor ColumnParallelLinear::weight_grad() const { return buf_.grad(w_).view({out_, in_}); }
Tensor ColumnParallelLinear::bias() const { return buf_.param(b_).view({out_}); }
Tensor ColumnParallelLinear::bias_grad() const { return b_ >= 0 ? buf_.grad(b_).view({out_}) : Tensor(); }

RowParallelLinear::RowParallelLinear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out,
                                     const ModelParallelConfig& par, bool bias)
    : buf_(buf), par_(par), out_(out) {
  const int tp = par.tp_size(), r = par.tp_rank();
  MT_CHECK(in % tp == 0, "{}: {} input features do not split over {} ranks", prefix, in, tp);
  in_ = in / tp;
  w_ = buf.add_shard(prefix + ".weight", {out, in_}, {out, in}, 1, int64_t(r) * in_, false);
  buf.set_overwrites_first_grad(w_);  // backward's wgrad GEMM takes grad_beta
  if (bias) {
    b_ = buf.add(prefix + ".bias", {out}, true);
    // Each rank sees only its tokens' share of dy: the grad is a partial sum.
    if (par.sequence_parallel && tp > 1) buf.set_sequence_parallel(b_, true);
  }
}

void RowParallelLinear::init(float std, uint64_t seed) const {
  init_normal(buf_, w_, std, seed);
  if (b_ >= 0) fill(buf_.param(b_), 0.0f);
}

Tensor RowParallelLinear::forward(const Tensor& x, Saved& s) const {
  const int64_t n = x.numel() / in_;
  s.x = x.view({n, in_});
  Tensor y = Tensor::empty({n, out_}, x.dtype(), x.device());
  // The bias joins the partial product of tp rank 0 only, so the reduction adds it once.
  const bool with_bias = b_ >= 0 && par_.tp_rank() == 0;
  Tensor b = with_bias ? buf_.param(b_) : Tensor();
  if (par_.sequence_parallel && par_.tp_size() > 1 && par_.tp_comm_overlap) {
    // The reduce-scatter as one reduce per destination rank's block of rows, each started as
    // soon as that block's GEMM is done (blocks in rank order on every rank).
    const int size = par_.tp_size();
    const int64_t m = rows_per_rank(n, size);
    Tensor out = Tensor::empty({m, out_}, x.dtype(), x.device());
    std::vector<std::unique_ptr<CommHandle>> work;
    for (int r = 0; r < size; ++r) {
      gemm(s.x.narrow0(r * m, m), false, buf_.param(w_), true, y.narrow0(r * m, m), 1.0f, 0.0f,
           with_bias ? &b : nullptr);
      work.push_back(par_.tp->reduce_async(y.narrow0(r * m, m), out, r));
    }
    for (auto& w : work) w->wait();
    return out;
  }
  gemm(s.x, false, buf_.param(w_), true, y, 1.0f, 0.0f, with_bias ? &b : nullptr);
  if (par_.tp_size() == 1) return y;
  if (par_.sequence_parallel) return reduce_scatter_tokens(y, *par_.tp);
  par_.tp->all_reduce(y);
  return y;
}

Tensor RowParallelLinear::backward(const Tensor& dy, Saved& s, const InputEpilogue* input) const {
  const InputEpilogue* gelu = input && input->epilogue == Epilogue::Gelu ? input : nullptr;
  const int64_t n = s.x.size(0);
  Tensor dy_local = dy.view({dy.numel() / out_, out_});
  const bool gathered = par_.sequence_parallel && par_.tp_size() > 1;
  const int64_t dy_rows = gathered ? dy_local.size(0) * par_.tp_size() : dy_local.size(0);
  MT_CHECK(dy_rows == n, "RowParallelLinear backward: dy has {} tokens, input had {}", dy_rows, n);
  Tensor dx = Tensor::empty({n, in_}, s.x.dtype(), s.x.device());
  Tensor dy2;
  auto dgrad_rows = [&](int64_t r0, int64_t k) {
    if (gelu)  // dx = (dy W) * gelu'(pre), db_accum += its column sums
      gemm_dgelu(dy2.narrow0(r0, k), false, buf_.param(w_), false, gelu->pre.view({n, in_}).narrow0(r0, k),
                 dx.narrow0(r0, k), gelu->db_accum.defined() ? &gelu->db_accum : nullptr);
    else
      gemm(dy2.narrow0(r0, k), false, buf_.param(w_), false, dx.narrow0(r0, k));
  };
  if (gathered && par_.tp_comm_overlap) {
    dy2 = Tensor::empty({n, out_}, dy.dtype(), dy.device());
    gather_tokens_blockwise(dy_local, dy2, *par_.tp, dgrad_rows);
  } else {
    dy2 = gathered ? gather_tokens(dy_local, *par_.tp) : dy_local;
    dgrad_rows(0, n);
  }
  auto wgrad = [this, gathered](const Tensor& dy, const Tensor& x, const Tensor& dy_local) {
    if (b_ >= 0 && !gathered) {  // dW += dy^T x and db += sum_rows dy from one GEMM
      gemm_wgrad_bgrad(dy, x, buf_.grad(w_), buf_.grad(b_), buf_.grad_beta(w_));
    } else {
      gemm(dy, true, x, false, buf_.grad(w_), 1.0f, buf_.grad_beta(w_));
      if (b_ >= 0) bias_grad_accumulate(dy_local, buf_.grad(b_));  // partial with sequence parallelism
    }
  };
  if (WeightGradStore::active()) {
    Tensor dy = dy2.to(dy2.device());
    // dy_local is this rank's rows of dy2 (gathered) or dy2 itself.
    Tensor local = gathered ? dy_local.to(dy_local.device()) : dy;
    WeightGradStore::active()->defer([wgrad, dy, x = s.x.to(s.x.device()), local] { wgrad(dy, x, local); });
  } else {
    wgrad(dy2, s.x, dy_local);
  }
  s = Saved{};
  return dx;
}

}  // namespace mt
