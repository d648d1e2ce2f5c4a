// Grouped GEMM on CUDA (kernels/grouped_gemm.h): a call's non-empty groups as one
// cublasGemmGroupedBatchedEx launch, fp32 accumulation (CUBLAS_COMPUTE_32F: fp32 operands run
// true fp32, bf16/fp16 run on tensor cores). Row-major X is column-major X^T (as in gemm.cu), so
// with m_g = counts[g] each group is, in cuBLAS's column-major terms C = op(A) op(B) + beta C:
//   forward  y_g [N x m_g, ld N]  = (w_g [K x N, ld K])^T  x_g [K x m_g, ld K]
//   dgrad    dx_g [K x m_g, ld K] =  w_g [K x N, ld K]     dy_g [N x m_g, ld N]
//   wgrad    dw_g [K x N, ld K]   =  x_g [K x m_g, ld K]  (dy_g [N x m_g, ld N])^T + beta dw_g
// Each group is its own cuBLAS group of one problem (their sizes differ).
//
// cuBLAS's table for this API (cuBLAS 12.5+, CUBLAS_COMPUTE_32F) has A, B and C of one type:
// fp32, bf16 or fp16. So forward and dgrad run grouped for every dtype; wgrad only with fp32
// operands, its C being the fp32 main grad: bf16/fp16 operands with an fp32 C are not in the
// table, and the dispatcher's loop of cuBLASLt GEMMs (which has that mix) runs instead. Pointers
// must be 16-byte aligned (cuBLAS asks it of 16-bit operands; we ask it of all), sizes must fit
// int, and K = 0 (an output of zeros or beta dw) is left to the loop. A call that does not fit
// returns false before writing anything.
//
// Groups without rows launch nothing: forward and dgrad have no rows to write; wgrad's dw_g
// becomes beta dw_g (cudaMemsetAsync for beta 0, which must overwrite even NaN; scale_ for a beta
// other than 0 and 1), after the grouped launch.
#include <cstdio>
#include <set>
#include <string>
#include <utility>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cublas_handle.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/per_device.h"

namespace mt::cuda {
namespace {

// cuBLAS reads the A, B and C pointer arrays from device memory when the GEMM runs. Each call
// writes its table into pinned host memory and copies it to device memory on the call's stream
// (pinned: a true asynchronous DMA; from pageable memory the driver may stage or wait on the
// stream). Neither copy may be rewritten until that GEMM has finished with it, whatever stream it
// ran on: the DMA reads the host copy at some later time, the GEMM the device copy. So a device
// keeps a ring of kSlots tables, each with an event recorded after its GEMM; a call takes the next
// slot and first waits for that slot's event, i.e. for the grouped GEMM kSlots calls back. That is
// normally long done, so the wait costs nothing; at worst it keeps the host from running more
// than kSlots grouped GEMMs ahead of the device.
constexpr int kSlots = 64;

struct Slot {
  void** host = nullptr;  // pinned
  void** dev = nullptr;
  size_t capacity = 0;    // pointers
  cudaEvent_t done = nullptr;
};

struct Tables {
  std::mutex mu;
  Slot slots[kSlots];
  int next = 0;
  std::set<std::pair<int, int>> declined;  // (A/B type, C type) cuBLAS said it does not support
};

Tables& tables(int device) {  // `device` is current
  return per_device<Tables>(device, [] {
    auto* t = new Tables;
    for (Slot& s : t->slots) MT_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    return t;
  });
}

// The slot's tables hold at least n pointers (its event has completed: nothing reads them).
void reserve(Slot& slot, size_t n) {
  if (slot.capacity >= n) return;
  if (slot.host) MT_CUDA_CHECK(cudaFreeHost(slot.host));
  if (slot.dev) MT_CUDA_CHECK(cudaFree(slot.dev));
  const size_t cap = n > 2 * slot.capacity ? n : 2 * slot.capacity;
  MT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&slot.host), cap * sizeof(void*)));
  MT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&slot.dev), cap * sizeof(void*)));
  slot.capacity = cap;
}


// One problem of a grouped call: C (m x n) = op(A) (m x k) op(B) (k x n) + beta C, column-major.
struct Problem {
  const void* a;
  const void* b;
  void* c;
  int64_t m, n, k;
};

// What a call's problems share.
struct Layout {
  cublasOperation_t ta, tb;
  int64_t lda, ldb, ldc;
  DType ab, c;
};

// Whether cuBLAS's grouped GEMM has these types (see the top of this file).
bool has_types(DType ab, DType c) {
  return ab == c && (ab == DType::F32 || ab == DType::BF16 || ab == DType::F16);
}

bool fits(const Layout& l, const std::vector<Problem>& ps) {
  auto small = [](int64_t v) { return v >= 0 && v <= INT32_MAX; };
  if (!small(l.lda) || !small(l.ldb) || !small(l.ldc) || !small(int64_t(ps.size()))) return false;
  for (const Problem& p : ps)
    if (!small(p.m) || !small(p.n) || !small(p.k) || !aligned16(p.a) || !aligned16(p.b) || !aligned16(p.c))
      return false;
  return true;
}

// Runs `ps` as one cublasGemmGroupedBatchedEx on `st` (the device is current). Returns false,
// having written no C, where the sizes do not fit or cuBLAS declines the call.
bool run_grouped(int device, cudaStream_t st, const Layout& l, const std::vector<Problem>& ps, float beta) {
  if (ps.empty()) return true;
  if (!fits(l, ps)) return false;
  const std::pair<int, int> types{int(l.ab), int(l.c)};
  CublasOnStream blas = cublas_on_stream(device, st);
  Tables& t = tables(device);
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.declined.count(types)) return false;

  const size_t P = ps.size();
  Slot& slot = t.slots[t.next];
  t.next = (t.next + 1) % kSlots;
  MT_CUDA_CHECK(cudaEventSynchronize(slot.done));  // never recorded: returns at once
  reserve(slot, 3 * P);
  for (size_t i = 0; i < P; ++i) {
    slot.host[i] = const_cast<void*>(ps[i].a);
    slot.host[P + i] = const_cast<void*>(ps[i].b);
    slot.host[2 * P + i] = ps[i].c;
  }
  MT_CUDA_CHECK(cudaMemcpyAsync(slot.dev, slot.host, 3 * P * sizeof(void*), cudaMemcpyHostToDevice, st));

  // The per-group arrays live on the host; cuBLAS reads them during the call.
  std::vector<cublasOperation_t> ta(P, l.ta), tb(P, l.tb);
  std::vector<int> m(P), n(P), k(P), lda(P, int(l.lda)), ldb(P, int(l.ldb)), ldc(P, int(l.ldc)), size(P, 1);
  std::vector<float> alphas(P, 1.0f), betas(P, beta);
  for (size_t i = 0; i < P; ++i) {
    m[i] = int(ps[i].m);
    n[i] = int(ps[i].n);
    k[i] = int(ps[i].k);
  }
  const cudaDataType_t ab = cuda_data_type(l.ab), ct = cuda_data_type(l.c);
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      blas.handle, ta.data(), tb.data(), m.data(), n.data(), k.data(), alphas.data(), slot.dev, ab, lda.data(),
      slot.dev + P, ab, ldb.data(), betas.data(), slot.dev + 2 * P, ct, ldc.data(), int(P), size.data(),
      CUBLAS_COMPUTE_32F);
  MT_CUDA_CHECK(cudaEventRecord(slot.done, st));  // after the copy and (if launched) the GEMM
  if (status == CUBLAS_STATUS_SUCCESS) return true;
  // Declined (types or a constraint this file does not know of): say so once per type pair and
  // leave these types to the per-group loop from now on.
  if (status != CUBLAS_STATUS_NOT_SUPPORTED && status != CUBLAS_STATUS_INVALID_VALUE) MT_CUBLAS_CHECK(status);
  std::fprintf(stderr,
               "megatron: warning: cublasGemmGroupedBatchedEx declined A/B %s, C %s (%s); grouped GEMMs of these "
               "types run one GEMM per group\n",
               std::string(dtype_name(l.ab)).c_str(), std::string(dtype_name(l.c)).c_str(),
               cublasGetStatusString(status));
  t.declined.insert(types);
  return false;
}

// Element `i` of a contiguous tensor.
char* at(const Tensor& t, int64_t i) { return static_cast<char*>(t.raw()) + i * int64_t(dtype_size(t.dtype())); }

}  // namespace

bool grouped_gemm_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& y,
                          Stream s) {
  const int64_t N = w.size(1), K = w.size(2);
  if (x.dtype() != w.dtype() || !has_types(x.dtype(), y.dtype()) || K == 0) return false;
  if (y.numel() == 0) return true;
  std::vector<Problem> ps;
  int64_t row = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    if (counts[g] > 0) ps.push_back({at(w, int64_t(g) * N * K), at(x, row * K), at(y, row * N), N, counts[g], K});
    row += counts[g];
  }
  CudaDeviceGuard guard(y.device().index);
  return run_grouped(y.device().index, stream_of(s), {CUBLAS_OP_T, CUBLAS_OP_N, K, K, N, x.dtype(), y.dtype()}, ps,
                     0.0f);
}

bool grouped_gemm_dgrad(const Tensor& dy, const Tensor& w, const std::vector<int64_t>& counts, const Tensor& dx,
                        Stream s) {
  const int64_t N = w.size(1), K = w.size(2);
  if (dy.dtype() != w.dtype() || !has_types(dy.dtype(), dx.dtype()) || N == 0) return false;
  if (dx.numel() == 0) return true;
  std::vector<Problem> ps;
  int64_t row = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    if (counts[g] > 0) ps.push_back({at(w, int64_t(g) * N * K), at(dy, row * N), at(dx, row * K), K, counts[g], N});
    row += counts[g];
  }
  CudaDeviceGuard guard(dx.device().index);
  return run_grouped(dx.device().index, stream_of(s), {CUBLAS_OP_N, CUBLAS_OP_N, K, N, K, dy.dtype(), dx.dtype()},
                     ps, 0.0f);
}

bool grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const std::vector<int64_t>& counts, const Tensor& dw,
                        float beta, Stream s) {
  const int64_t N = dw.size(1), K = dw.size(2);
  if (dy.dtype() != x.dtype() || !has_types(x.dtype(), dw.dtype())) return false;
  if (dw.numel() == 0) return true;
  std::vector<Problem> ps;
  int64_t row = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    if (counts[g] > 0) ps.push_back({at(x, row * K), at(dy, row * N), at(dw, int64_t(g) * N * K), K, N, counts[g]});
    row += counts[g];
  }
  const int device = dw.device().index;
  CudaDeviceGuard guard(device);
  const cudaStream_t st = stream_of(s);
  if (!run_grouped(device, st, {CUBLAS_OP_N, CUBLAS_OP_T, K, N, K, x.dtype(), dw.dtype()}, ps, beta)) return false;
  for (size_t g = 0; g < counts.size(); ++g) {
    if (counts[g] > 0 || beta == 1.0f) continue;
    const Tensor dwg = dw.narrow0(int64_t(g), 1);
    if (beta == 0.0f)
      MT_CUDA_CHECK(cudaMemsetAsync(dwg.raw(), 0, dwg.nbytes(), st));
    else
      scale_(dwg, beta, s);
  }
  return true;
}

}  // namespace mt::cuda
