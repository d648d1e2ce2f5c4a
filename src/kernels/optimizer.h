#pragma once
// Fused AdamW over a flat range (PyTorch's AdamW arithmetic, decoupled weight decay):
//   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   master *= 1 - lr * wd;  master -= (lr / (1 - b1^t)) * m / (sqrt(v / (1 - b2^t)) + eps)
// master, grad, m, v: fp32, equal numel. param_out (optional): the model's bf16/fp16 copy,
// rewritten from master. Bytes: 4 fp32 reads + 3 fp32 writes (+ 1 half write) per element.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct AdamWParams {
  float lr = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;          // 1-based, for bias correction
  float grad_scale = 1.0f;   // applied to grads first: 1/loss_scale times the clipping coefficient
};

void adamw_step(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                const Tensor* param_out, const AdamWParams& p, Stream s = {});

// One AdamW step over many ranges of flat buffers, in one pass (one CUDA launch for a whole
// model's parameters instead of one per tensor). Range r updates master[r.master + j] and
// m, v[r.state + j] from grad[r.param + j], and rewrites param_out[r.param + j] (j < r.numel),
// with weight decay p.weight_decay where r.decay, else none. Bit-identical to adamw_step on
// each range's slices. master, m, v, grad: fp32 flat tensors; ranges must lie inside them.
struct AdamWRange {
  int64_t param = 0;   // offset in grad and param_out
  int64_t master = 0;  // offset in master
  int64_t state = 0;   // offset in m and v
  int64_t numel = 0;
  bool decay = true;
};
void adamw_step_ranges(const Tensor& master, const Tensor& grad, const Tensor& m, const Tensor& v,
                       const Tensor* param_out, const std::vector<AdamWRange>& ranges, const AdamWParams& p,
                       Stream s = {});

}  // namespace mt
