#pragma once
// The multi-threaded driver of our packed GEMMs (sgemm_avx512.h, sgemm_avx2.h), with per-tile
// epilogues: the threads pack op(A) and op(B) once, each a share, then compute tiles of C from
// the shared packed operands and finish each tile while it is still in cache (bias, GeLU, GeLU'),
// saving the separate passes over C. x86-64 only; call only when cpu_isa() is kAvx512 or kAvx2
// (kernels/cpu_isa.h): the path's own micro-kernel and GeLU run.
#include <cstdint>

namespace mt::cpu {

// Applied to each finished tile of C ([m, n] row-major, leading dimension n), in this order.
struct TileEpilogue {
  const float* bias = nullptr;       // C[i, j] += bias[j]
  float* gelu_out = nullptr;         // gelu_out[i, j] = gelu(C[i, j])          ([m, n])
  const float* dgelu_pre = nullptr;  // C[i, j] = C[i, j] gelu'(dgelu_pre[i, j])  ([m, n])
};

// C = alpha op(A) op(B) + beta C (fp32, C contiguous [m, n]), then the epilogue. Each element's
// arithmetic depends on k only, so the result does not depend on the thread count. With
// a_row_sums (trans_a only): a_row_sums[i] += sum_p op(A)[i, p], added in p order while A is
// packed (a weight-gradient GEMM's bias gradient, without another read of dy).
void parallel_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, const TileEpilogue& epilogue = {},
                     float* a_row_sums = nullptr);

// parallel_sgemm's packing buffers for op(A) [m, k] and op(B) [k, n], in floats.
int64_t packed_a_floats(int64_t m, int64_t k);
int64_t packed_b_floats(int64_t k, int64_t n);

}  // namespace mt::cpu
