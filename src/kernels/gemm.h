#pragma once
// Matrix multiply: C[m,n] = alpha * op(A) @ op(B) + beta * C  (+ bias[n] broadcast over rows).
//   op(X) = X or X^T. A and B are 2-D, contiguous, of one float dtype (fp32/bf16/fp16);
//   C is fp32 or A's dtype; bias (optional) is A's dtype or fp32. Accumulation is fp32.
//   beta = 1 with an fp32 C accumulates weight gradients into main grads.
// Cost: 2*m*n*k FLOPs; bytes (m*k + k*n) * sizeof(A) + m*n * sizeof(C) * (1 + (beta != 0)).
#include <vector>

#include "core/tensor.h"

namespace mt {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
          float alpha = 1.0f, float beta = 0.0f, const Tensor* bias = nullptr, Stream s = {});

// The host tensors one CPU gemm of op(A) [m, k] x op(B) [k, n] (inputs in `in`, C in `out`)
// allocates while it runs, in bytes each: fp32 copies of inputs and output in another dtype and
// the packing buffers of our AVX-512/AVX2 kernels. For memory estimates (train/memory_report.h).
std::vector<int64_t> cpu_gemm_workspace(int64_t m, int64_t n, int64_t k, DType in, DType out);

// Whether a CUDA GEMM times the cuBLASLt heuristic's first 16 algorithms on its first call of
// each shape and keeps the fastest (on by default; MT_GEMM_AUTOTUNE=0 or set_gemm_autotune(false),
// which --deterministic-mode calls, keeps the heuristic's first; another wins only if 3% faster).
// The timing is paid once, in the first iteration (up to ~2 s for GPT 1.3B's shapes on an H200,
// bench/RESULTS.md). Every candidate computes the same product within fp32
// accumulation rounding, but which wins can differ from run to run, so a tuned run's loss curve is
// not bit-reproducible. Read when a shape's plan is built: set it before the first GEMM.
void set_gemm_autotune(bool on);
bool gemm_autotune();
// While one lives, GEMMs this thread plans take the heuristic's algorithm untimed: for shapes that
// change from call to call (the experts' per-group GEMMs, whose rows per expert vary every step),
// timing 16 candidates for a shape seen once costs far more than it can save (bench/RESULTS.md,
// the MoE benchmark).
class GemmHeuristicOnly {
 public:
  GemmHeuristicOnly();
  ~GemmHeuristicOnly();
  GemmHeuristicOnly(const GemmHeuristicOnly&) = delete;
  GemmHeuristicOnly& operator=(const GemmHeuristicOnly&) = delete;
};

// db_accum[c] += sum_n dy[n, c]  (dy: [N, C] any float dtype; db_accum fp32 [C]).
void bias_grad_accumulate(const Tensor& dy, const Tensor& db_accum, Stream s = {});

// GEMM with the MLP's GeLU (activation.h's tanh GeLU) fused in. Each is, by definition, the
// sequence of ops in its brackets; on CUDA with bf16/fp16 operands it runs as one cuBLASLt
// matmul with a GeLU epilogue (whose GeLU is the same tanh approximation), saving the separate
// elementwise pass: forward one read of pre, backward a read and a write of dpre (its bias
// gradient is bias_grad_accumulate's, after the GEMM; MT_GEMM_FUSE_DGELU=bgrad puts it in the
// epilogue too, slower on H200). Elsewhere (CPU, fp32, a shape cuBLASLt cannot fuse,
// MT_GEMM_FUSE_GELU=0, the backward with MT_GEMM_FUSE_DGELU=0) the bracketed sequence runs.
// A, B: as gemm's; pre, y, dpre: [m, n] in
// A's dtype, distinct tensors; bias: A's dtype or fp32 [n]; db_accum: fp32 [n].
// Returns whether the fused epilogue ran.
//
// fc1 forward:  pre = op(A) op(B) (+ bias);  y = gelu(pre).
//   [gemm(a, ta, b, tb, pre, 1, 0, bias); gelu_forward(pre, y)]
bool gemm_bias_gelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor* bias,
                    const Tensor& pre, const Tensor& y, Stream s = {});
// fc2 dgrad:    dpre = (op(A) op(B)) * gelu'(pre);  db_accum += column sums of dpre (fc1's bias grad).
//   [gemm(a, ta, b, tb, dpre); gelu_backward(dpre, pre, dpre); bias_grad_accumulate(dpre, *db_accum)]
bool gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre,
                const Tensor& dpre, const Tensor* db_accum = nullptr, Stream s = {});

// A linear layer's weight and bias gradients: the bracketed sequence, or on CUDA with bf16/fp16
// and MT_GEMM_FUSE_BGRAD=1 one GEMM with cuBLASLt's BGRADB epilogue (opt-in: slower on an H200,
// whose cuBLASLt sums dy's columns in a kernel of its own, slower than bias_grad_accumulate):
//   dw_accum = dy^T x + dw_beta dw_accum,  db_accum += column sums of dy.
//   [gemm(dy, true, x, false, dw_accum, 1, dw_beta); bias_grad_accumulate(dy, db_accum)]
// dy [N, out] and x [N, in] of one float dtype; dw_accum fp32 [out, in]; db_accum fp32 [out].
// dw_beta 0 overwrites dw_accum without reading it (a round's first gradient, see
// ParamAndGradBuffer::grad_beta). Returns whether the fused epilogue ran.
bool gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum,
                      float dw_beta = 1.0f, Stream s = {});

}  // namespace mt
