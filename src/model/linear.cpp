#include "model/linear.h"

#include "core/rng.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace mt {

void init_normal(const ParamAndGradBuffer& buf, ParamAndGradBuffer::Id id, float std, uint64_t seed) {
  const ParamInfo& p = buf.info(id);
  const uint64_t stream = rng_stream("init/" + p.name);
  if (!p.tensor_parallel()) {
    fill_normal(buf.param(id), std, seed, stream);
    return;
  }
  // A tensor-parallel shard draws the Philox numbers of the global (row-major) element indices
  // it holds, so its values are those of the same elements in the single-rank model.
  const size_t d = size_t(p.shard_dim);
  int64_t inner_global = 1, inner_local = 1, outer = 1;
  for (size_t i = d + 1; i < p.shape.size(); ++i) inner_global *= p.global_shape[i];
  for (size_t i = 0; i < d; ++i) outer *= p.shape[i];
  inner_local = p.shape[d] * inner_global;  // one outer index's contiguous run in the shard
  const int64_t row_global = p.global_shape[d] * inner_global;
  const Tensor& flat = buf.params();
  for (int64_t o = 0; o < outer; ++o)
    fill_normal(flat.flat_slice(p.offset + o * inner_local, inner_local, {inner_local}), std, seed, stream,
                o * row_global + p.shard_start * inner_global);
}

Linear::Linear(ParamAndGradBuffer& buf, const std::string& prefix, int in, int out, bool bias)
    : buf_(buf), in_(in), out_(out) {
  w_ = buf.add(prefix + ".weight", {out, in}, false);
  buf.set_overwrites_first_grad(w_);  // backward's wgrad GEMM takes grad_beta
  if (bias) b_ = buf.add(prefix + ".bias", {out}, true);
}

void Linear::init(float std, uint64_t seed) const {
  init_normal(buf_, w_, std, seed);
  if (b_ >= 0) fill(buf_.param(b_), 0.0f);
}

Tensor Linear::forward(const Tensor& x, Saved& s) const {
  int64_t n = x.numel() / in_;
  s.x = x.view({n, in_});
  Tensor y = Tensor::empty({n, out_}, x.dtype(), x.device());
  Tensor b = b_ >= 0 ? buf_.param(b_) : Tensor();
  gemm(s.x, false, buf_.param(w_), true, y, 1.0f, 0.0f, b_ >= 0 ? &b : nullptr);
  return y;
}

Tensor Linear::backward(const Tensor& dy, Saved& s) const {
  int64_t n = s.x.size(0);
  Tensor dy2 = dy.view({n, out_});
  Tensor dx = Tensor::empty({n, in_}, s.x.dtype(), s.x.device());
  gemm(dy2, false, buf_.param(w_), false, dx);                        // dx = dy W
  gemm(dy2, true, s.x, false, buf_.grad(w_), 1.0f, buf_.grad_beta(w_));  // dW += dy^T x
  if (b_ >= 0) bias_grad_accumulate(dy2, buf_.grad(b_));              // db += sum_n dy
  s = Saved{};
  return dx;
}

}  // namespace mt
