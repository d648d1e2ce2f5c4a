// Dispatch and argument checks for rope.h.
#include "kernels/rope.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {
namespace {

// qkv [B, T, G, Q/G + 2, D] (float, G = n_query_groups, at least one query head per group);
// cos, sin fp32 [T', R/2] with T' >= T; R even, 0 < R <= D.
void check_rope(const char* op, const Tensor& qkv, const Tensor& cos, const Tensor& sin, int n_query_groups,
                int rot_dim) {
  using namespace detail;
  check_float(op, "qkv", qkv);
  check_dtype(op, "cos", cos, DType::F32);
  check_dtype(op, "sin", sin, DType::F32);
  MT_CHECK(qkv.dim() == 5, "{}: qkv {} must be [B, T, G, Q/G + 2, D]", op, qkv.str());
  MT_CHECK(n_query_groups > 0 && qkv.size(2) == n_query_groups,
           "{}: n_query_groups = {} must be positive and equal qkv {}'s dim 2", op, n_query_groups, qkv.str());
  MT_CHECK(qkv.size(3) >= 3, "{}: qkv {} needs at least one query head per group (dim 3 = Q/G + 2 >= 3)", op,
           qkv.str());
  const int64_t T = qkv.size(1), D = qkv.size(4);
  MT_CHECK(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= D, "{}: rot_dim = {} must be even and in (0, head dim {}]",
           op, rot_dim, D);
  MT_CHECK(cos.dim() == 2 && cos.size(1) == rot_dim / 2 && cos.size(0) >= T,
           "{}: cos {} must be [T', rot_dim / 2 = {}] with T' >= T = {}", op, cos.str(), rot_dim / 2, T);
  check_shape(op, "sin", sin, cos.shape());
}

}  // namespace

void rope_forward(const Tensor& qkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim,
                  Stream s) {
  check_rope("rope_forward", qkv, cos, sin, n_query_groups, rot_dim);
  if (detail::on_cuda("rope_forward", {&qkv, &cos, &sin}))
    MT_CUDA_CALL(rope_forward(qkv, cos, sin, n_query_groups, rot_dim, s));
  cpu::rope_forward(qkv, cos, sin, n_query_groups, rot_dim);
}

void rope_backward(const Tensor& dqkv, const Tensor& cos, const Tensor& sin, int n_query_groups, int rot_dim,
                   Stream s) {
  check_rope("rope_backward", dqkv, cos, sin, n_query_groups, rot_dim);
  if (detail::on_cuda("rope_backward", {&dqkv, &cos, &sin}))
    MT_CUDA_CALL(rope_backward(dqkv, cos, sin, n_query_groups, rot_dim, s));
  cpu::rope_backward(dqkv, cos, sin, n_query_groups, rot_dim);
}

}  // namespace mt
