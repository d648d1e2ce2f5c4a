// Dispatch and argument checks for embedding.h.
#include "kernels/embedding.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

void embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor* wpe, int64_t vocab_start, const Tensor& out,
                       Stream s) {
  using namespace detail;
  check_dtype("embedding_forward", "ids", ids, DType::I32);
  check_float("embedding_forward", "wte", wte);
  check_float("embedding_forward", "out", out);
  MT_CHECK(ids.dim() == 2 && wte.dim() == 2, "embedding_forward: ids {} must be [B, T], wte {} [V, C]", ids.str(),
           wte.str());
  const int64_t B = ids.size(0), T = ids.size(1), C = wte.size(1);
  check_shape("embedding_forward", "out", out, {B, T, C});
  MT_CHECK(out.dtype() == wte.dtype(), "embedding_forward: out {} must have wte's dtype", out.str());
  if (wpe) {
    check_float("embedding_forward", "wpe", *wpe);
    MT_CHECK(wpe->dim() == 2 && wpe->size(0) >= T && wpe->size(1) == C && wpe->dtype() == wte.dtype(),
             "embedding_forward: wpe {} must be [>= {}, {}] of wte's dtype", wpe->str(), T, C);
  }
  if (on_cuda("embedding_forward", {&ids, &wte, wpe, &out}))
    MT_CUDA_CALL(embedding_forward(ids, wte, wpe, vocab_start, out, s));
  cpu::embedding_forward(ids, wte, wpe, vocab_start, out);
}

void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, const Tensor& dwte_accum,
                        const Tensor* dwpe_accum, Stream s) {
  using namespace detail;
  check_dtype("embedding_backward", "ids", ids, DType::I32);
  check_float("embedding_backward", "dout", dout);
  check_dtype("embedding_backward", "dwte_accum", dwte_accum, DType::F32);
  MT_CHECK(ids.dim() == 2 && dwte_accum.dim() == 2, "embedding_backward: ids {} must be [B, T], dwte {} [V, C]",
           ids.str(), dwte_accum.str());
  const int64_t B = ids.size(0), T = ids.size(1), C = dwte_accum.size(1);
  check_shape("embedding_backward", "dout", dout, {B, T, C});
  if (dwpe_accum) {
    check_dtype("embedding_backward", "dwpe_accum", *dwpe_accum, DType::F32);
    MT_CHECK(dwpe_accum->dim() == 2 && dwpe_accum->size(0) >= T && dwpe_accum->size(1) == C,
             "embedding_backward: dwpe_accum {} must be [>= {}, {}]", dwpe_accum->str(), T, C);
  }
  if (on_cuda("embedding_backward", {&dout, &ids, &dwte_accum, dwpe_accum}))
    MT_CUDA_CALL(embedding_backward(dout, ids, vocab_start, dwte_accum, dwpe_accum, s));
  cpu::embedding_backward(dout, ids, vocab_start, dwte_accum, dwpe_accum);
}

}  // namespace mt
