// Dispatch and argument checks for moe_permute.h.
#include "kernels/moe_permute.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

using namespace detail;

// A [rows, C] float matrix.
void check_rows(const char* op, const char* name, const Tensor& t) {
  check_float(op, name, t);
  MT_CHECK(t.dim() == 2, "{}: {} must be [rows, C], got {}", op, name, t.str());
}
void check_map(const char* op, const char* name, const Tensor& t, int64_t n) {
  check_dtype(op, name, t, DType::I32);
  check_numel(op, name, t, n);
}

}  // namespace

void moe_permute(const Tensor& x, const Tensor& row_source, int topk, const Tensor& out, Stream s) {
  const char* op = "moe_permute";
  check_rows(op, "x", x);
  check_rows(op, "out", out);
  MT_CHECK(topk >= 1 && out.dtype() == x.dtype() && out.size(1) == x.size(1), "{}: out {} must be x {}'s dtype and width",
           op, out.str(), x.str());
  check_map(op, "row_source", row_source, out.size(0));
  if (out.numel() == 0) return;
  if (on_cuda(op, {&x, &row_source, &out})) MT_CUDA_CALL(moe_permute(x, row_source, topk, out, s));
  cpu::moe_permute(x, row_source, topk, out);
}

void moe_permute_backward(const Tensor& dout, const Tensor& row_map, int topk, const Tensor& dx, Stream s) {
  const char* op = "moe_permute_backward";
  check_rows(op, "dout", dout);
  check_rows(op, "dx", dx);
  MT_CHECK(topk >= 1 && dout.dtype() == dx.dtype() && dout.size(1) == dx.size(1),
           "{}: dout {} and dx {} must share dtype and width", op, dout.str(), dx.str());
  check_map(op, "row_map", row_map, dx.size(0) * topk);
  if (dx.numel() == 0) return;
  if (on_cuda(op, {&dout, &row_map, &dx})) MT_CUDA_CALL(moe_permute_backward(dout, row_map, topk, dx, s));
  cpu::moe_permute_backward(dout, row_map, topk, dx);
}

void moe_unpermute(const Tensor& y, const Tensor& row_map, const Tensor& probs, const Tensor& out, Stream s) {
  const char* op = "moe_unpermute";
  check_rows(op, "y", y);
  check_rows(op, "out", out);
  check_dtype(op, "probs", probs, DType::F32);
  MT_CHECK(probs.dim() == 2 && probs.size(0) == out.size(0), "{}: probs {} must be [N, k] for out {}", op, probs.str(),
           out.str());
  MT_CHECK(out.dtype() == y.dtype() && out.size(1) == y.size(1), "{}: out {} must be y {}'s dtype and width", op,
           out.str(), y.str());
  check_map(op, "row_map", row_map, probs.numel());
  if (out.numel() == 0) return;
  if (on_cuda(op, {&y, &row_map, &probs, &out})) MT_CUDA_CALL(moe_unpermute(y, row_map, probs, out, s));
  cpu::moe_unpermute(y, row_map, probs, out);
}

void moe_unpermute_backward(const Tensor& dout, const Tensor& y, const Tensor& row_map, const Tensor& row_source,
                            const Tensor& probs, const Tensor& dy, const Tensor& dprobs, Stream s) {
  const char* op = "moe_unpermute_backward";
  check_rows(op, "dout", dout);
  check_rows(op, "y", y);
  check_like(op, "dy", dy, y);
  check_dtype(op, "probs", probs, DType::F32);
  check_like(op, "dprobs", dprobs, probs);
  MT_CHECK(probs.dim() == 2 && probs.size(0) == dout.size(0) && dout.dtype() == y.dtype() && dout.size(1) == y.size(1),
           "{}: dout {}, y {} and probs {} do not match", op, dout.str(), y.str(), probs.str());
  check_map(op, "row_map", row_map, probs.numel());
  check_map(op, "row_source", row_source, y.size(0));
  if (on_cuda(op, {&dout, &y, &row_map, &row_source, &probs, &dy, &dprobs}))
    MT_CUDA_CALL(moe_unpermute_backward(dout, y, row_map, row_source, probs, dy, dprobs, s));
  cpu::moe_unpermute_backward(dout, y, row_map, row_source, probs, dy, dprobs);
}

}  // namespace mt
