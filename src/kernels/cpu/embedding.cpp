// Token + position embedding on the CPU.
//   forward:  out[b, t, :] = wte[ids[b, t] - vocab_start, :] + wpe[t, :]  (rows outside this
//             shard's vocabulary contribute zero). Tokens in parallel; reads one wte row (and
//             wpe row) per token, writes one out row.
//   backward: dwte[id - vocab_start, :] += dout[b, t, :], dwpe[t, :] += dout[b, t, :].
//             Threads own blocks of channels and walk all tokens in order, so each gradient
//             element is summed in token order whatever the thread count; dout is read once.
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

template <class T>
void forward_t(const int32_t* ids, const T* wte, int64_t V, const T* wpe, int64_t vocab_start, T* out, int64_t B,
               int64_t Tn, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < B * Tn; ++n) {
    const int64_t row = int64_t(ids[n]) - vocab_start;
    const bool in_shard = row >= 0 && row < V;
    const T* w = wte + row * C;
    const T* p = wpe ? wpe + (n % Tn) * C : nullptr;
    T* o = out + n * C;
    for (int64_t c = 0; c < C; ++c) {
      const float x = (in_shard ? to_f32(w[c]) : 0.0f) + (p ? to_f32(p[c]) : 0.0f);
      o[c] = from_f32<T>(x);
    }
  }
}

template <class T>
void backward_t(const T* dout, const int32_t* ids, int64_t vocab_start, float* dwte, int64_t V, float* dwpe, int64_t B,
                int64_t Tn, int64_t C) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, width = std::min(kCols, C - c0);
    for (int64_t n = 0; n < B * Tn; ++n) {
      const T* g = dout + n * C + c0;
      const int64_t row = int64_t(ids[n]) - vocab_start;
      if (row >= 0 && row < V) {
        float* w = dwte + row * C + c0;
        for (int64_t j = 0; j < width; ++j) w[j] += to_f32(g[j]);
      }
      if (dwpe) {
        float* p = dwpe + (n % Tn) * C + c0;
        for (int64_t j = 0; j < width; ++j) p[j] += to_f32(g[j]);
      }
    }
  }
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor* wpe, int64_t vocab_start,
                       const Tensor& out) {
  dispatch_float(wte.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_t(ids.data<int32_t>(), wte.data<T>(), wte.size(0), wpe ? wpe->data<T>() : nullptr, vocab_start,
              out.data<T>(), ids.size(0), ids.size(1), wte.size(1));
  });
}

void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, const Tensor& dwte_accum,
                        const Tensor* dwpe_accum) {
  dispatch_float(dout.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_t(dout.data<T>(), ids.data<int32_t>(), vocab_start, dwte_accum.data<float>(), dwte_accum.size(0),
               dwpe_accum ? dwpe_accum->data<float>() : nullptr, ids.size(0), ids.size(1), dwte_accum.size(1));
  });
}

}  // namespace mt::cpu
