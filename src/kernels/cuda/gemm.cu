// GEMM through cuBLASLt: C[m,n] = alpha op(A) op(B) + beta C (+ bias[n]), row-major, fp32
// accumulation (CUBLAS_COMPUTE_32F: fp32 inputs run true fp32, never TF32; bf16/fp16 inputs
// run on tensor cores). Row-major X is column-major X^T, so we ask cuBLAS for
//   C^T[n,m] = op(B)^T[n,k] op(A)^T[k,m],
// i.e. cuBLAS's "A" is our B and its "B" our A, each with its own transpose flag, and the bias
// (one value per row of C^T) is the BIAS epilogue. beta = 1 with C == D accumulates in place.
// Plans (descriptors + the heuristic's algorithm) are cached per device by shape, dtypes and
// pointer alignment; each device has one Lt handle and a 32 MiB workspace. Where cuBLASLt offers
// no algorithm (unusual bias dtype, odd alignment) we fall back to cublasGemmEx plus a bias
// kernel. MT_GEMM_BACKEND=cublas forces the fallback (for debugging).
// Cost: 2 m n k FLOPs; H100 dense bf16 ~ 600-750 TFLOP/s achievable for large shapes, fp32
// (no TF32) ~ 50 TFLOP/s.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace mt::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 64;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: break;
  }
  fail_check(__FILE__, __LINE__, "is_floating(dtype)", std::string(dtype_name(t)));
}

// Largest power of two <= 256 dividing the address (what cuBLASLt's alignment preferences mean).
int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && (a % uintptr_t(align)) != 0) align >>= 1;
  return align;
}

struct PlanKey {
  int64_t m, n, k;
  bool ta, tb;
  int ab_type, c_type, bias_type;  // bias_type -1: no bias
  int align_a, align_b, align_c, align_bias;
  auto tie() const {
    return std::tie(m, n, k, ta, tb, ab_type, c_type, bias_type, align_a, align_b, align_c, align_bias);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct Plan {
  bool ok = false;  // false: cuBLASLt has no algorithm, use the fallback
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct DeviceContext {
  std::mutex mu;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, Plan> plans;
};

DeviceContext& context(int device) {
  static std::mutex mu;
  static DeviceContext* contexts[kMaxDevices] = {};
  MT_CHECK(device >= 0 && device < kMaxDevices, "CUDA device {}", device);
  std::lock_guard<std::mutex> lock(mu);
  if (!contexts[device]) {
    auto* ctx = new DeviceContext;  // lives until exit, like the handles it holds
    MT_CUBLAS_CHECK(cublasLtCreate(&ctx->lt));
    MT_CUBLAS_CHECK(cublasCreate(&ctx->blas));
    MT_CUDA_CHECK(cudaMalloc(&ctx->workspace, kWorkspaceBytes));
    MT_CUBLAS_CHECK(cublasSetWorkspace(ctx->blas, ctx->workspace, kWorkspaceBytes));
    contexts[device] = ctx;
  }
  return *contexts[device];
}

bool force_fallback() {
  static const bool force = [] {
    const char* e = std::getenv("MT_GEMM_BACKEND");
    return e && std::strcmp(e, "cublas") == 0;
  }();
  return force;
}

const char* type_name(int t) {
  switch (t) {
    case CUDA_R_32F: return "fp32";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_16F: return "fp16";
    default: return "none";
  }
}

// The fallback is correct but may be slower (and rounds a half C twice when adding a bias):
// say so once per shape. Seen on H100: a bf16/fp16 C with an fp32 bias has no Lt algorithm.
void warn_fallback(const PlanKey& key, const char* why) {
  std::fprintf(stderr,
               "megatron: warning: cuBLASLt cannot run gemm %lldx%lldx%lld (trans_a %d, trans_b %d, A/B %s, C %s, "
               "bias %s): %s; using cublasGemmEx\n",
               (long long)key.m, (long long)key.n, (long long)key.k, int(key.ta), int(key.tb), type_name(key.ab_type),
               type_name(key.c_type), type_name(key.bias_type), why);
}

// Builds the cuBLASLt plan for `key` (the bias pointer is needed for its alignment).
Plan make_plan(DeviceContext& ctx, const PlanKey& key, const void* bias) {
  Plan plan;
  const cudaDataType_t ab = cudaDataType_t(key.ab_type), ct = cudaDataType_t(key.c_type);
  MT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLAS "A" = our B, "B" = our A (see the top of this file).
  const cublasOperation_t op_a = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (key.bias_type >= 0) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bt = key.bias_type;
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    MT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  // Column-major views: our B is [n, k] (op N) or [k, n] (op T) with ld = its row-major width.
  const uint64_t m = uint64_t(key.m), n = uint64_t(key.n), k = uint64_t(key.k);
  MT_CUBLAS_CHECK(key.tb ? cublasLtMatrixLayoutCreate(&plan.la, ab, k, n, int64_t(k))
                         : cublasLtMatrixLayoutCreate(&plan.la, ab, n, k, int64_t(n)));
  MT_CUBLAS_CHECK(key.ta ? cublasLtMatrixLayoutCreate(&plan.lb, ab, m, k, int64_t(m))
                         : cublasLtMatrixLayoutCreate(&plan.lb, ab, k, m, int64_t(k)));
  MT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lc, ct, n, m, int64_t(n)));

  cublasLtMatmulPreference_t pref = nullptr;
  MT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = kWorkspaceBytes;
  const uint32_t align_a = uint32_t(key.align_b), align_b = uint32_t(key.align_a), align_c = uint32_t(key.align_c);
  MT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  MT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, plan.desc, plan.la, plan.lb, plan.lc, plan.lc,
                                                           pref, 1, &result, &found);
  MT_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  if (st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan.algo = result.algo;
    plan.ok = true;
  } else {
    warn_fallback(key, st == CUBLAS_STATUS_SUCCESS ? "no algorithm found" : cublasGetStatusString(st));
  }
  return plan;
}

// c[i, j] = (beta == 0 ? 0 : beta c[i, j]) + bias[j] (bias may be null): the k = 0 case, and the
// bias of the fallback path (beta = 1 there).
template <class C, class B>
__global__ void scale_add_bias_kernel(C* c, const B* bias, int64_t m, int64_t n, float beta) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m * n; i += stride) {
    float v = beta == 0.0f ? 0.0f : beta * to_float(c[i]);
    if (bias) v += to_float(bias[i % n]);
    c[i] = from_float<C>(v);
  }
}

void scale_add_bias(const Tensor& c, const Tensor* bias, float beta, cudaStream_t st) {
  const int64_t m = c.size(0), n = c.size(1);
  dispatch_float(c.dtype(), [&](auto ctag) {
    using C = typename decltype(ctag)::type;
    dispatch_float(bias ? bias->dtype() : DType::F32, [&](auto btag) {
      using B = typename decltype(btag)::type;
      scale_add_bias_kernel<C, B><<<grid_size(m * n, 256), 256, 0, st>>>(
          static_cast<C*>(c.raw()), bias ? static_cast<const B*>(bias->raw()) : nullptr, m, n, beta);
    });
  });
  MT_CUDA_CHECK_LAUNCH();
}

void gemm_fallback(DeviceContext& ctx, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                   float alpha, float beta, const Tensor* bias, int64_t m, int64_t n, int64_t k, cudaStream_t st) {
  MT_CUBLAS_CHECK(cublasSetStream(ctx.blas, st));
  const cudaDataType_t ab = cuda_type(a.dtype()), ct = cuda_type(c.dtype());
  MT_CUBLAS_CHECK(cublasGemmEx(ctx.blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                               int(n), int(m), int(k), &alpha, b.raw(), ab, int(b.size(1)), a.raw(), ab,
                               int(a.size(1)), &beta, c.raw(), ct, int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (bias) scale_add_bias(c, bias, 1.0f, st);
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c, float alpha, float beta,
          const Tensor* bias, Stream s) {
  const int64_t m = c.size(0), n = c.size(1), k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return;
  const int device = c.device().index;
  CudaDeviceGuard guard(device);
  const cudaStream_t st = stream_of(s);
  if (k == 0) {  // the answer is beta C (+ bias); cuBLAS need not agree on that
    scale_add_bias(c, bias, beta, st);
    return;
  }
  MT_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX, "gemm: {}x{}x{} too large", m, n, k);
  DeviceContext& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.mu);
  if (force_fallback()) {
    gemm_fallback(ctx, a, trans_a, b, trans_b, c, alpha, beta, bias, m, n, k, st);
    return;
  }
  const void* bias_ptr = bias ? bias->raw() : nullptr;
  const PlanKey key{m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    int(cuda_type(a.dtype())),
                    int(cuda_type(c.dtype())),
                    bias ? int(cuda_type(bias->dtype())) : -1,
                    alignment_of(a.raw()),
                    alignment_of(b.raw()),
                    alignment_of(c.raw()),
                    bias ? alignment_of(bias_ptr) : 0};
  auto it = ctx.plans.find(key);
  if (it == ctx.plans.end()) it = ctx.plans.emplace(key, make_plan(ctx, key, bias_ptr)).first;
  Plan& plan = it->second;
  if (plan.ok) {
    if (bias)
      MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                                     sizeof(bias_ptr)));
    const cublasStatus_t status = cublasLtMatmul(ctx.lt, plan.desc, &alpha, b.raw(), plan.la, a.raw(), plan.lb, &beta,
                                                 c.raw(), plan.lc, c.raw(), plan.lc, &plan.algo, ctx.workspace,
                                                 kWorkspaceBytes, st);
    if (status == CUBLAS_STATUS_SUCCESS) return;
    if (status != CUBLAS_STATUS_NOT_SUPPORTED && status != CUBLAS_STATUS_INVALID_VALUE) MT_CUBLAS_CHECK(status);
    warn_fallback(key, cublasGetStatusString(status));
    plan.ok = false;  // remember: this shape goes to the fallback from now on
  }
  gemm_fallback(ctx, a, trans_a, b, trans_b, c, alpha, beta, bias, m, n, k, st);
}

}  // namespace mt::cuda
