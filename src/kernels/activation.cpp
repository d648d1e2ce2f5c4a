// Dispatch and argument checks for activation.h.
#include "kernels/activation.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

void check_pair(const char* op, const Tensor& in, const Tensor& out) {
  detail::check_float(op, "input", in);
  detail::check_float(op, "output", out);
  MT_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel(), "{}: {} and {} must match in dtype and numel", op,
           in.str(), out.str());
}

}  // namespace

void gelu_forward(const Tensor& x, const Tensor& y, Stream s) {
  check_pair("gelu_forward", x, y);
  if (detail::on_cuda("gelu_forward", {&x, &y})) MT_CUDA_CALL(gelu_forward(x, y, s));
  cpu::gelu_forward(x, y);
}

void gelu_backward(const Tensor& dy, const Tensor& x, const Tensor& dx, Stream s) {
  check_pair("gelu_backward", dy, dx);
  check_pair("gelu_backward", x, dx);
  if (detail::on_cuda("gelu_backward", {&dy, &x, &dx})) MT_CUDA_CALL(gelu_backward(dy, x, dx, s));
  cpu::gelu_backward(dy, x, dx);
}

void dropout_forward(const Tensor& x, const Tensor& y, float p, uint64_t seed, uint64_t stream, Stream s,
                     uint64_t offset) {
  check_pair("dropout_forward", x, y);
  MT_CHECK(p >= 0.0f && p < 1.0f, "dropout_forward: p = {} must be in [0, 1)", p);
  if (detail::on_cuda("dropout_forward", {&x, &y})) MT_CUDA_CALL(dropout_forward(x, y, p, seed, stream, s, offset));
  cpu::dropout_forward(x, y, p, seed, stream, offset);
}

void dropout_backward(const Tensor& dy, const Tensor& dx, float p, uint64_t seed, uint64_t stream, Stream s,
                      uint64_t offset) {
  check_pair("dropout_backward", dy, dx);
  MT_CHECK(p >= 0.0f && p < 1.0f, "dropout_backward: p = {} must be in [0, 1)", p);
  if (detail::on_cuda("dropout_backward", {&dy, &dx}))
    MT_CUDA_CALL(dropout_backward(dy, dx, p, seed, stream, s, offset));
  cpu::dropout_backward(dy, dx, p, seed, stream, offset);
}

}  // namespace mt
