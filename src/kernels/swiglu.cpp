// Dispatch and argument checks for swiglu.h.
#include "kernels/swiglu.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

// x [..., 2F] and y [..., F] of one float dtype: the same leading dims, the last one halved.
void check_halves(const char* op, const char* xname, const Tensor& x, const char* yname, const Tensor& y) {
  using namespace detail;
  check_float(op, xname, x);
  check_float(op, yname, y);
  MT_CHECK(x.dtype() == y.dtype(), "{}: {} and {} must share a dtype", op, x.str(), y.str());
  MT_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, "{}: {} {} must be [..., 2F]", op, xname, x.str());
  Shape half = x.shape();
  half.back() /= 2;
  check_shape(op, yname, y, half);
}

bool overlap(const Tensor& a, const Tensor& b) {
  const auto* pa = static_cast<const char*>(a.raw());
  const auto* pb = static_cast<const char*>(b.raw());
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

}  // namespace

void swiglu_forward(const Tensor& x, const Tensor& y, Stream s) {
  check_halves("swiglu_forward", "x", x, "y", y);
  MT_CHECK(!overlap(x, y), "swiglu_forward: y {} must not overlap x {}", y.str(), x.str());
  if (detail::on_cuda("swiglu_forward", {&x, &y})) MT_CUDA_CALL(swiglu_forward(x, y, s));
  cpu::swiglu_forward(x, y);
}

void swiglu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s) {
  check_halves("swiglu_backward", "x", x, "dy", dy);
  detail::check_float("swiglu_backward", "dx", dx);
  detail::check_shape("swiglu_backward", "dx", dx, x.shape());
  MT_CHECK(dx.dtype() == x.dtype(), "swiglu_backward: dx {} must have x's dtype", dx.str());
  MT_CHECK(!overlap(dx, x) && !overlap(dx, dy), "swiglu_backward: dx {} must not alias x {} or dy {}", dx.str(),
           x.str(), dy.str());
  if (detail::on_cuda("swiglu_backward", {&dy, &x, &dx})) MT_CUDA_CALL(swiglu_backward(dy, x, dx, s));
  cpu::swiglu_backward(dy, x, dx);
}

}  // namespace mt
