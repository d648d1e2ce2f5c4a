#include "model/norm.h"

#include "kernels/elementwise.h"
#include "kernels/layernorm.h"
#include "kernels/rmsnorm.h"

namespace mt {

Norm::Norm(ParamAndGradBuffer& buf, const std::string& prefix, int hidden, Normalization kind, float eps,
           bool sequence_parallel)
    : buf_(buf), kind_(kind), hidden_(hidden), eps_(eps) {
  w_ = buf.add(prefix + ".weight", {hidden}, true);
  buf.set_sequence_parallel(w_, sequence_parallel);
  if (kind == Normalization::LayerNorm) {
    b_ = buf.add(prefix + ".bias", {hidden}, true);
    buf.set_sequence_parallel(b_, sequence_parallel);
  }
}

void Norm::init() const {
  fill(buf_.param(w_), 1.0f);
  if (b_ >= 0) fill(buf_.param(b_), 0.0f);
}

Tensor Norm::forward(const Tensor& x, Saved& s) const {
  const int64_t n = x.numel() / hidden_;
  s.x = x.view({n, hidden_});
  Tensor y = Tensor::empty(s.x.shape(), x.dtype(), x.device());
  s.rstd = Tensor::empty({n}, DType::F32, x.device());
  if (kind_ == Normalization::RMSNorm) {
    rmsnorm_forward(s.x, buf_.param(w_), eps_, y, s.rstd);
  } else {
    s.mean = Tensor::empty({n}, DType::F32, x.device());
    layernorm_forward(s.x, buf_.param(w_), buf_.param(b_), eps_, y, s.mean, s.rstd);
  }
  return y;
}

Tensor Norm::forward_add(const Tensor& x, const Tensor& r, Tensor* sum, Saved& s) const {
  const int64_t n = x.numel() / hidden_;
  *sum = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor y = Tensor::empty({n, hidden_}, x.dtype(), x.device());
  s.x = sum->view({n, hidden_});
  s.rstd = Tensor::empty({n}, DType::F32, x.device());
  const Tensor x2 = x.view({n, hidden_}), r2 = r.view({n, hidden_});
  if (kind_ == Normalization::RMSNorm) {
    add_rmsnorm_forward(x2, r2, buf_.param(w_), eps_, s.x, y, s.rstd);
  } else {
    s.mean = Tensor::empty({n}, DType::F32, x.device());
    add_layernorm_forward(x2, r2, buf_.param(w_), buf_.param(b_), eps_, s.x, y, s.mean, s.rstd);
  }
  return y;
}

Tensor Norm::backward(const Tensor& dy, Saved& s, const Tensor* dresidual) const {
  Tensor dx = Tensor::empty(s.x.shape(), s.x.dtype(), s.x.device());
  const Tensor dy2 = dy.view(s.x.shape());
  if (kind_ == Normalization::RMSNorm) {
    if (dresidual)
      rmsnorm_backward_add(dy2, s.x, buf_.param(w_), s.rstd, dresidual->view(s.x.shape()), dx, buf_.grad(w_));
    else
      rmsnorm_backward(dy2, s.x, buf_.param(w_), s.rstd, dx, buf_.grad(w_));
  } else if (dresidual) {
    layernorm_backward_add(dy2, s.x, buf_.param(w_), s.mean, s.rstd, dresidual->view(s.x.shape()), dx, buf_.grad(w_),
                           buf_.grad(b_));
  } else {
    layernorm_backward(dy2, s.x, buf_.param(w_), s.mean, s.rstd, dx, buf_.grad(w_), buf_.grad(b_));
  }
  s = Saved{};
  return dx;
}

}  // namespace mt
