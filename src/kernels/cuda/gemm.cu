// GEMM through cuBLASLt: C[m,n] = alpha op(A) op(B) + beta C (+ bias[n]), row-major, fp32
// accumulation (CUBLAS_COMPUTE_32F: fp32 inputs run true fp32, never TF32; bf16/fp16 inputs
// run on tensor cores). Row-major X is column-major X^T, so we ask cuBLAS for
//   C^T[n,m] = op(B)^T[n,k] op(A)^T[k,m],
// i.e. cuBLAS's "A" is our B and its "B" our A, each with its own transpose flag, and the bias
// (one value per row of C^T) is the BIAS epilogue. beta = 1 with C == D accumulates in place.
// Plans (descriptors + an algorithm) are cached per device by shape, dtypes and pointer
// alignment; each device has one Lt handle and a 32 MiB workspace. The algorithm is the fastest
// of the heuristic's first kAutotuneCandidates (by autotune.h's 3% margin over the heuristic's
// first), timed on the first call of each plan (gemm.h's gemm_autotune; off: the heuristic's
// first, the same bits from run to run). Where cuBLASLt offers
// no algorithm (unusual bias dtype, odd alignment) we fall back to cublasGemmEx plus a bias
// kernel. MT_GEMM_BACKEND=cublas forces the fallback (for debugging).
//
// gemm_bias_gelu / gemm_dgelu (bf16/fp16) use cuBLASLt's GeLU epilogues, whose GeLU is the tanh
// approximation of activation.h (tests/kernels/test_cuda_gemm_gelu.cpp tells it apart from erf):
//   GELU_AUX_BIAS: D = gelu(op(A) op(B) + bias) is y, and the pre-activation is written to the
//     aux matrix (pre, ld n, so n % 8 == 0);
//   DGELU:         D = (op(A) op(B)) * gelu'(aux) is dpre (the default backward; fc1's bias
//     gradient is then bias_grad_accumulate's sum of dpre);
//   DGELU_BGRAD:   the same, and the bias gradient, the sum of D over our rows (cuBLAS's
//     columns), is *stored* in the bias vector: we give it a scratch vector (fp32 where cuBLASLt
//     offers one, else D's dtype, rounded once from an fp32 sum) and add that into the fp32 main
//     grad; where BGRAD has no algorithm, DGELU plus bias_grad_accumulate. Opt-in (slower).
// In the row-major-as-transposed view the aux matrix is pre^T [n, m] column-major with ld n,
// exactly our row-major pre. fp32, odd n, k = 0 and shapes without an algorithm run the unfused
// ops (once-per-shape warning); MT_GEMM_FUSE_GELU=0 turns the fusion off (for A/B timing).
// gemm_wgrad_bgrad: the weight gradient dW^T[in, out] = x^T dy in the column-major view, whose
// "B" is dy^T with k = tokens: BGRADB sums B over k, one value per column of D = per output
// feature, i.e. dy's column sums. It too stores: an fp32 scratch (the bias-gradient type is C's,
// fp32 here), added to db_accum. Opt-in (MT_GEMM_FUSE_BGRAD=1): cuBLASLt runs the sum as a
// separate kernel (BgradAB) that is slower than bias_grad_accumulate's packed reduction.
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

#include "core/env.h"
#include "kernels/cuda/autotune.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cublas_handle.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/per_device.h"

// kernels/gemm.h, whose mt::gemm would make this file's calls of mt::cuda::gemm ambiguous (ADL).
namespace mt {
bool gemm_autotune();
}

namespace mt::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;


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
  int ab_type, c_type;
  int epilogue;   // cublasLtEpilogue_t
  int bias_type;  // the bias (or bias-gradient) vector's type; -1: none
  int align_a, align_b, align_c, align_bias, align_aux;  // align_aux 0: no aux matrix
  auto tie() const {
    return std::tie(m, n, k, ta, tb, ab_type, c_type, epilogue, bias_type, align_a, align_b, align_c, align_bias,
                    align_aux);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

constexpr int kAutotuneCandidates = 16;

struct Plan {
  bool ok = false;  // false: cuBLASLt has no algorithm, use the fallback
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  cublasLtMatmulAlgo_t candidates[kAutotuneCandidates]{};  // the heuristic's, best guess first
  int n_candidates = 0;                                    // 0 once timed (or nothing to choose)
};

struct DeviceContext {
  std::mutex mu;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, Plan> plans;
};

DeviceContext& context(int device) {
  return per_device<DeviceContext>(device, [] {
    auto* ctx = new DeviceContext;
    MT_CUBLAS_CHECK(cublasLtCreate(&ctx->lt));
    MT_CUBLAS_CHECK(cublasCreate(&ctx->blas));
    MT_CUDA_CHECK(cudaMalloc(&ctx->workspace, kWorkspaceBytes));
    MT_CUBLAS_CHECK(cublasSetWorkspace(ctx->blas, ctx->workspace, kWorkspaceBytes));
    return ctx;
  });
}

// Points the cuBLAS handle at stream `st`. cublasSetStream also drops the handle's workspace
// for cuBLAS's default pool, so ours is set again. Holds ctx.mu.
void bind_blas(DeviceContext& ctx, cudaStream_t st) {
  MT_CUBLAS_CHECK(cublasSetStream(ctx.blas, st));
  MT_CUBLAS_CHECK(cublasSetWorkspace(ctx.blas, ctx.workspace, kWorkspaceBytes));
}

bool force_fallback() {
  static const bool force = [] {
    const char* e = std::getenv("MT_GEMM_BACKEND");
    return e && std::strcmp(e, "cublas") == 0;
  }();
  return force;
}

bool gelu_fusion_enabled() {
  static const bool on = env_switch("MT_GEMM_FUSE_GELU", true);
  return on && !force_fallback();
}
// The backward epilogue (MT_GEMM_FUSE_DGELU): 1 (default), the DGELU epilogue, then
// bias_grad_accumulate over the dpre it wrote; 0, the plain GEMM, then gelu_backward and
// bias_grad_accumulate; bgrad, DGELU_BGRAD. On an H200 (cuBLASLt 13.1, bench/gemm_bench, fc2
// dgrad + GeLU' + fc1's bias grad): DGELU 0.189 / 0.278 / 0.935 ms against 0.226 / 0.346 / 1.120
// for 0 at 124M / 350M / 1.3B; DGELU_BGRAD 0.440 / 0.773 / 1.889, its bias-gradient reduction
// being slow. Read on every call so a test can switch it.
enum class DgeluFusion { Off, Dgelu, DgeluBgrad };
DgeluFusion dgelu_fusion() {
  const char* e = std::getenv("MT_GEMM_FUSE_DGELU");
  if (!gelu_fusion_enabled() || (e && std::strcmp(e, "0") == 0)) return DgeluFusion::Off;
  if (!e || !*e || std::strcmp(e, "1") == 0) return DgeluFusion::Dgelu;
  if (std::strcmp(e, "bgrad") == 0) return DgeluFusion::DgeluBgrad;
  MT_USER_ERROR("MT_GEMM_FUSE_DGELU={}: expected 0, 1 or bgrad", e);
}
// The weight-gradient epilogue BGRADB (MT_GEMM_FUSE_BGRAD=1, opt-in): on an H200 (cuBLASLt 13.1,
// bench/gemm_bench, qkv + proj + fc2 wgrad with their bias grads) it costs 0.28 / 0.57 / 3.2 ms per
// step more than the plain wgrad + bias_grad_accumulate at 124M / 350M / 1.3B. Read on every call
// so a test can switch it.
bool bgrad_fusion_enabled() { return env_switch("MT_GEMM_FUSE_BGRAD", false) && !force_fallback(); }

const char* type_name(int t) {
  switch (t) {
    case CUDA_R_32F: return "fp32";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_16F: return "fp16";
    default: return "none";
  }
}

const char* epilogue_name(int e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT: return "none";
    case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DGELU: return "DGELU";
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: return "DGELU_BGRAD";
    case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
    default: return "?";
  }
}

// The fallback is correct but may be slower (and rounds a half C twice when adding a bias):
// say so once per shape. Seen on H100: a bf16/fp16 C with an fp32 bias has no Lt algorithm.
void warn_fallback(const PlanKey& key, const char* why, const char* instead) {
  std::fprintf(stderr,
               "megatron: warning: cuBLASLt cannot run gemm %lldx%lldx%lld (trans_a %d, trans_b %d, A/B %s, C %s, "
               "epilogue %s, bias %s): %s; %s\n",
               (long long)key.m, (long long)key.n, (long long)key.k, int(key.ta), int(key.tb), type_name(key.ab_type),
               type_name(key.c_type), epilogue_name(key.epilogue), type_name(key.bias_type), why, instead);
}

PlanKey make_key(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c, int64_t m, int64_t n, int64_t k,
                 cublasLtEpilogue_t epilogue, int bias_type, const void* bias, const void* aux) {
  return PlanKey{m,
                 n,
                 k,
                 ta,
                 tb,
                 int(cuda_data_type(a.dtype())),
                 int(cuda_data_type(c.dtype())),
                 int(epilogue),
                 bias_type,
                 alignment_of(a.raw()),
                 alignment_of(b.raw()),
                 alignment_of(c.raw()),
                 bias ? alignment_of(bias) : 0,
                 aux ? alignment_of(aux) : 0};
}

// Builds the cuBLASLt plan for `key` (the bias and aux pointers are needed for their alignment).
// `instead` (may be null: stay quiet) names what runs when there is no algorithm.
Plan make_plan(DeviceContext& ctx, const PlanKey& key, const void* bias, const void* aux, const char* instead) {
  Plan plan;
  const cudaDataType_t ab = cudaDataType_t(key.ab_type), ct = cudaDataType_t(key.c_type);
  MT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLAS "A" = our B, "B" = our A (see the top of this file).
  const cublasOperation_t op_a = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cublasLtEpilogue_t epi = cublasLtEpilogue_t(key.epilogue);
  if (epi != CUBLASLT_EPILOGUE_DEFAULT)
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (key.bias_type >= 0) {
    const int32_t bt = key.bias_type;
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    MT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (key.align_aux > 0) {  // the GeLU pre-activation: [n rows, m columns] column-major, ld n
    const int64_t ld = key.n;
    MT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
    MT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
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
  const int wanted = gemm_autotune() ? kAutotuneCandidates : 1;
  cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates]{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, plan.desc, plan.la, plan.lb, plan.lc, plan.lc,
                                                           pref, wanted, results, &found);
  MT_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  if (st == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < found; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) plan.candidates[plan.n_candidates++] = results[i].algo;
  if (plan.n_candidates > 0) {
    plan.algo = plan.candidates[0];
    plan.ok = true;
    if (plan.n_candidates == 1) plan.n_candidates = 0;  // nothing to choose between
  } else if (instead) {
    warn_fallback(key, st == CUBLAS_STATUS_SUCCESS ? "no algorithm found" : cublasGetStatusString(st), instead);
  }
  return plan;
}

// Times each of plan.candidates on this call's operands (kernels/cuda/autotune.h) and keeps the
// fastest as plan.algo. The output goes to C itself where beta == 0 (the real call that follows
// overwrites it, and the GeLU aux / bias-gradient vectors too, which are outputs), else to a
// scratch D so that C keeps the value it accumulates into. A candidate cuBLASLt refuses at run
// time is skipped.
void autotune(DeviceContext& ctx, Plan& plan, const Tensor& a, const Tensor& b, const Tensor& c, float alpha,
              float beta, cudaStream_t st) {
  const int n = plan.n_candidates;
  plan.n_candidates = 0;
  Tensor scratch;
  void* d = c.raw();
  if (beta != 0.0f) {
    scratch = Tensor::empty(c.shape(), c.dtype(), c.device());
    d = scratch.raw();
  }
  const int best = autotune_pick(
      n,
      [&](int i) {
        const cublasStatus_t status =
            cublasLtMatmul(ctx.lt, plan.desc, &alpha, b.raw(), plan.la, a.raw(), plan.lb, &beta, c.raw(), plan.lc, d,
                           plan.lc, &plan.candidates[i], ctx.workspace, kWorkspaceBytes, st);
        if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED &&
            status != CUBLAS_STATUS_INVALID_VALUE)
          MT_CUBLAS_CHECK(status);
        return status == CUBLAS_STATUS_SUCCESS;
      },
      st);
  if (best > 0) plan.algo = plan.candidates[best];
  if (std::getenv("MT_AUTOTUNE_LOG"))
    std::fprintf(stderr, "megatron: gemm %lldx%lldx%lld: %d cuBLASLt algorithms, running number %d (0: the heuristic's first)\n",
                 (long long)c.size(0), (long long)c.size(1), (long long)(a.numel() / c.size(0)), n, best > 0 ? best : 0);
}

// C = alpha op(A) op(B) + beta C with `key`'s epilogue through cuBLASLt (D = C, in place).
// Returns false, having launched nothing, where cuBLASLt has no algorithm for `key` (found out
// once per key; `instead`, if not null, names the fallback in a warning then). Holds ctx.mu.
bool lt_matmul(DeviceContext& ctx, const PlanKey& key, const Tensor& a, const Tensor& b, const Tensor& c, float alpha,
               float beta, const void* bias, const void* aux, cudaStream_t st, const char* instead) {
  auto it = ctx.plans.find(key);
  if (it == ctx.plans.end()) it = ctx.plans.emplace(key, make_plan(ctx, key, bias, aux, instead)).first;
  Plan& plan = it->second;
  if (!plan.ok) return false;
  if (bias)
    MT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  if (aux)
    MT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
  if (plan.n_candidates > 0) autotune(ctx, plan, a, b, c, alpha, beta, st);
  // cuBLAS "A" = our B, "B" = our A (see the top of this file).
  const cublasStatus_t status = cublasLtMatmul(ctx.lt, plan.desc, &alpha, b.raw(), plan.la, a.raw(), plan.lb, &beta,
                                               c.raw(), plan.lc, c.raw(), plan.lc, &plan.algo, ctx.workspace,
                                               kWorkspaceBytes, st);
  if (status == CUBLAS_STATUS_SUCCESS) return true;
  if (status != CUBLAS_STATUS_NOT_SUPPORTED && status != CUBLAS_STATUS_INVALID_VALUE) MT_CUBLAS_CHECK(status);
  if (instead) warn_fallback(key, cublasGetStatusString(status), instead);
  plan.ok = false;  // remember: this key goes to the fallback from now on
  return false;
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
  bind_blas(ctx, st);
  const cudaDataType_t ab = cuda_data_type(a.dtype()), ct = cuda_data_type(c.dtype());
  MT_CUBLAS_CHECK(cublasGemmEx(ctx.blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                               int(n), int(m), int(k), &alpha, b.raw(), ab, int(b.size(1)), a.raw(), ab,
                               int(a.size(1)), &beta, c.raw(), ct, int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (bias) scale_add_bias(c, bias, 1.0f, st);
}

// dst[i] += src[i]: a bias gradient from DGELU_BGRAD's scratch into the fp32 main grad.
template <class T>
__global__ void accumulate_kernel(float* dst, const T* src, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] += to_float(src[i]);
}

void accumulate(const Tensor& dst, const Tensor& src, cudaStream_t st) {
  const int64_t n = dst.numel();
  dispatch_float(src.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    accumulate_kernel<T><<<grid_size(n, 256), 256, 0, st>>>(dst.data<float>(), static_cast<const T*>(src.raw()), n);
  });
  MT_CUDA_CHECK_LAUNCH();
}

// Whether a GeLU epilogue may be tried: half operands (fp32 keeps the unfused kernels, so fp32
// GPU runs stay comparable with the CPU op for op), an aux ld cuBLASLt accepts, a non-empty
// product that fits its int32 sizes.
bool gelu_fusable(const Tensor& a, int64_t m, int64_t n, int64_t k, bool backward = false) {
  return (backward ? dgelu_fusion() != DgeluFusion::Off : gelu_fusion_enabled()) && a.dtype() != DType::F32 && k > 0 && n % 8 == 0 && m <= INT32_MAX &&
         n <= INT32_MAX && k <= INT32_MAX;
}

}  // namespace

CublasOnStream cublas_on_stream(int device, cudaStream_t st) {
  DeviceContext& ctx = context(device);
  CublasOnStream out{std::unique_lock<std::mutex>(ctx.mu), ctx.blas};
  bind_blas(ctx, st);
  return out;
}

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
  if (!force_fallback()) {
    const void* bias_ptr = bias ? bias->raw() : nullptr;
    const PlanKey key = make_key(a, trans_a, b, trans_b, c, m, n, k,
                                 bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT,
                                 bias ? int(cuda_data_type(bias->dtype())) : -1, bias_ptr, nullptr);
    if (lt_matmul(ctx, key, a, b, c, alpha, beta, bias_ptr, nullptr, st, "using cublasGemmEx")) return;
  }
  gemm_fallback(ctx, a, trans_a, b, trans_b, c, alpha, beta, bias, m, n, k, st);
}

bool gemm_bias_gelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor* bias,
                    const Tensor& pre, const Tensor& y, Stream s) {
  const int64_t m = pre.size(0), n = pre.size(1), k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return false;
  const int device = pre.device().index;
  CudaDeviceGuard guard(device);
  if (gelu_fusable(a, m, n, k)) {
    DeviceContext& ctx = context(device);
    std::lock_guard<std::mutex> lock(ctx.mu);
    const void* bias_ptr = bias ? bias->raw() : nullptr;
    const PlanKey key = make_key(a, trans_a, b, trans_b, y, m, n, k,
                                 bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX,
                                 bias ? int(cuda_data_type(bias->dtype())) : -1, bias_ptr, pre.raw());
    if (lt_matmul(ctx, key, a, b, y, 1.0f, 0.0f, bias_ptr, pre.raw(), stream_of(s),
                  "running gemm and gelu_forward separately"))
      return true;
  }
  gemm(a, trans_a, b, trans_b, pre, 1.0f, 0.0f, bias, s);
  gelu_forward(pre, y, s);
  return false;
}

bool gemm_dgelu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& pre, const Tensor& dpre,
                const Tensor* db_accum, Stream s) {
  const int64_t m = dpre.size(0), n = dpre.size(1), k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return false;
  const int device = dpre.device().index;
  CudaDeviceGuard guard(device);
  const cudaStream_t st = stream_of(s);
  if (gelu_fusable(a, m, n, k, /*backward=*/true)) {
    DeviceContext& ctx = context(device);
    std::unique_lock<std::mutex> lock(ctx.mu);
    if (db_accum && dgelu_fusion() == DgeluFusion::DgeluBgrad) {
      // BGRAD stores its sum: into a scratch vector (kept alive until `accumulate` is queued).
      for (DType t : {DType::F32, a.dtype()}) {
        Tensor scratch = Tensor::empty({n}, t, dpre.device());
        const PlanKey key = make_key(a, trans_a, b, trans_b, dpre, m, n, k, CUBLASLT_EPILOGUE_DGELU_BGRAD,
                                     int(cuda_data_type(t)), scratch.raw(), pre.raw());
        const char* instead = t == DType::F32 ? nullptr : "trying DGELU with bias_grad_accumulate";
        if (lt_matmul(ctx, key, a, b, dpre, 1.0f, 0.0f, scratch.raw(), pre.raw(), st, instead)) {
          lock.unlock();
          accumulate(*db_accum, scratch, st);
          return true;
        }
      }
    }
    const PlanKey key =
        make_key(a, trans_a, b, trans_b, dpre, m, n, k, CUBLASLT_EPILOGUE_DGELU, -1, nullptr, pre.raw());
    if (lt_matmul(ctx, key, a, b, dpre, 1.0f, 0.0f, nullptr, pre.raw(), st,
                  "running gemm and gelu_backward separately")) {
      lock.unlock();
      if (db_accum) bias_grad_accumulate(dpre, *db_accum, s);
      return true;
    }
  }
  gemm(a, trans_a, b, trans_b, dpre, 1.0f, 0.0f, nullptr, s);
  gelu_backward(dpre, pre, dpre, s);
  if (db_accum) bias_grad_accumulate(dpre, *db_accum, s);
  return false;
}

bool gemm_wgrad_bgrad(const Tensor& dy, const Tensor& x, const Tensor& dw_accum, const Tensor& db_accum,
                      float dw_beta, Stream s) {
  const int64_t m = dw_accum.size(0), n = dw_accum.size(1), k = dy.size(0);
  if (m == 0 || n == 0) {  // no weight gradient, but a bias gradient all the same
    bias_grad_accumulate(dy, db_accum, s);
    return false;
  }
  const int device = dw_accum.device().index;
  CudaDeviceGuard guard(device);
  if (bgrad_fusion_enabled() && dy.dtype() != DType::F32 && k > 0 && m <= INT32_MAX && n <= INT32_MAX &&
      k <= INT32_MAX) {
    DeviceContext& ctx = context(device);
    std::unique_lock<std::mutex> lock(ctx.mu);
    Tensor scratch = Tensor::empty({m}, DType::F32, dw_accum.device());  // alive until `accumulate` is queued
    const PlanKey key = make_key(dy, true, x, false, dw_accum, m, n, k, CUBLASLT_EPILOGUE_BGRADB,
                                 int(CUDA_R_32F), scratch.raw(), nullptr);
    if (lt_matmul(ctx, key, dy, x, dw_accum, 1.0f, dw_beta, scratch.raw(), nullptr, stream_of(s),
                  "running gemm and bias_grad_accumulate separately")) {
      lock.unlock();
      accumulate(db_accum, scratch, stream_of(s));
      return true;
    }
  }
  gemm(dy, true, x, false, dw_accum, 1.0f, dw_beta, nullptr, s);
  bias_grad_accumulate(dy, db_accum, s);
  return false;
}

cudaDataType_t cuda_data_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: break;
  }
  fail_check(__FILE__, __LINE__, "is_floating(dtype)", std::string(dtype_name(t)));
}

}  // namespace mt::cuda
