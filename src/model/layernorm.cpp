#include "model/layernorm.h"

#include "kernels/elementwise.h"
#include "kernels/layernorm.h"

namespace mt {

LayerNorm::LayerNorm(ParamAndGradBuffer& buf, const std::string& prefix, int hidden, float eps,
                     bool sequence_parallel)
    : buf_(buf), hidden_(hidden), eps_(eps) {
  w_ = buf.add(prefix + ".weight", {hidden}, true);
  b_ = buf.add(prefix + ".bias", {hidden}, true);
  buf.set_sequence_parallel(w_, sequence_parallel);
  buf.set_sequence_parallel(b_, sequence_parallel);
}

void LayerNorm::init() const {
  fill(buf_.param(w_), 1.0f);
  fill(buf_.param(b_), 0.0f);
}

Tensor LayerNorm::forward(const Tensor& x, Saved& s) const {
  int64_t n = x.numel() / hidden_;
  Tensor x2 = x.view({n, hidden_});
  Tensor y = Tensor::empty(x2.shape(), x.dtype(), x.device());
  s.x = x2;
  s.mean = Tensor::empty({n}, DType::F32, x.device());
  s.rstd = Tensor::empty({n}, DType::F32, x.device());
  layernorm_forward(x2, buf_.param(w_), buf_.param(b_), eps_, y, s.mean, s.rstd);
  return y;
}

Tensor LayerNorm::forward_add(const Tensor& x, const Tensor& r, Tensor* sum, Saved& s) const {
  int64_t n = x.numel() / hidden_;
  *sum = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor y = Tensor::empty({n, hidden_}, x.dtype(), x.device());
  s.x = sum->view({n, hidden_});
  s.mean = Tensor::empty({n}, DType::F32, x.device());
  s.rstd = Tensor::empty({n}, DType::F32, x.device());
  add_layernorm_forward(x.view({n, hidden_}), r.view({n, hidden_}), buf_.param(w_), buf_.param(b_), eps_, s.x, y,
                        s.mean, s.rstd);
  return y;
}

Tensor LayerNorm::backward(const Tensor& dy, Saved& s, const Tensor* dresidual) const {
  Tensor dx = Tensor::empty(s.x.shape(), s.x.dtype(), s.x.device());
  if (dresidual)
    layernorm_backward_add(dy.view(s.x.shape()), s.x, buf_.param(w_), s.mean, s.rstd, dresidual->view(s.x.shape()), dx,
                           buf_.grad(w_), buf_.grad(b_));
  else
    layernorm_backward(dy.view(s.x.shape()), s.x, buf_.param(w_), s.mean, s.rstd, dx, buf_.grad(w_), buf_.grad(b_));
  s = Saved{};
  return dx;
}

}  // namespace mt
