// Causal attention (attention.h) through cuDNN's fused flash attention (SDPA), via the
// cudnn-frontend graph API, as llm.c does. Used for bf16/fp16 with dropout_p == 0; everything
// else (fp32, dropout, head sizes or shapes cuDNN rejects) returns false and runs the native kernel.
//
// qkv [B, T, G, H/G + 2, D] (a token holds (H + 2G) D elements): k and v are strided views
// described to cuDNN as [B, G, T, D] with strides (T*tok, (H/G + 2)*D, tok, 1) at offsets
// (H/G)*D and (H/G + 1)*D; cuDNN's SDPA reads key head h / (H/G) for query head h (grouped-query
// attention, h_k = h_v = G dividing h_q = H) and its backward writes dK, dV of the G heads,
// summed over each group's query heads. q is a view [B, H, T, D] with strides (T*tok, s, tok, 1)
// where one stride s steps through the query heads: s = 3D for multi-head attention (G = H),
// s = D for one group (G = 1). In between, the query heads of a token are not evenly spaced (a
// group's k and v sit between groups), so q is first gathered into a contiguous [B, T, H, D]
// (one 2-D copy: B*T*G rows of (H/G)*D elements) and dq is written there and scattered back;
// copies of B*T*H*D elements against attention's O(T) times more work.
// out [B, T, H, D] is [B, H, T, D] with strides (T*H*D, D, H*D, 1); dqkv has qkv's strides.
// cuDNN's Stats output is the natural log-sum-exp of the scaled scores per query row,
// [B, H, T, 1] with strides (H*T, T, 1, 1): the same definition and layout as our lse [B, H, T],
// so it is written straight into lse and the backward takes any lse of this contract (the CPU's
// or the native kernel's too).
//
// A graph is built once per (device, B, T, H, G, D, dtype, direction, deterministic) and cached; a
// shape cuDNN rejects is cached as unsupported. One cuDNN handle per device; workspace comes from
// the caching allocator on the call's stream. With attention_autotune() the graph holds every
// plan cuDNN's heuristic offers, and the shape's first call times them (autotune.h) on its own
// tensors (all of the call's outputs are written whole, so the timing runs leave nothing behind).
//
// Backward: cuDNN's default engine (atomic dQ accumulation), or with attention_deterministic()
// (--deterministic-mode) the dP-workspace engine: bit-reproducible, needs a B*H*T*T*2-byte workspace.
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/cuda/cuda_check.h"
#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/cuda/autotune.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/per_device.h"

namespace mt::cuda {
namespace {

namespace fe = cudnn_frontend;

#define MT_CUDNN_CHECK(expr)                                                               \
  do {                                                                                     \
    cudnnStatus_t mt_st_ = (expr);                                                         \
    if (mt_st_ != CUDNN_STATUS_SUCCESS)                                                    \
      ::mt::detail::cuda_fail(__FILE__, __LINE__, #expr, cudnnGetErrorString(mt_st_));     \
  } while (0)


enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

struct Key {
  int64_t B, T, H, G, D;
  int dtype;
  bool backward, deterministic;
  float scale;  // AttentionConfig::scale(), the SDPA's attn_scale (part of the graph)
  auto tie() const { return std::tie(B, T, H, G, D, dtype, backward, deterministic, scale); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }

  int64_t per_group() const { return H / G; }
  int64_t token() const { return (H + 2 * G) * D; }  // qkv elements per token
  // Whether q (and dq) are strided views of qkv (dqkv): its query heads evenly spaced.
  bool q_in_place() const { return G == 1 || G == H; }
};

struct Entry {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN cannot run this case
  std::string why;
  int64_t workspace = 0;  // of the plan that runs
  int64_t plans = 1;      // built plans; more than one: not yet timed
  int64_t plan = -1;      // the plan that runs: -1, the heuristic's (graph->execute)
};

struct DeviceContext {
  std::mutex mu;  // guards the handle's stream and the cache
  cudnnHandle_t handle = nullptr;
  std::map<Key, Entry> graphs;
};

DeviceContext& context(int device) {
  return per_device<DeviceContext>(device, [] {
    auto* ctx = new DeviceContext;
    MT_CUDNN_CHECK(cudnnCreate(&ctx->handle));
    return ctx;
  });
}

fe::DataType_t fe_type(DType d) { return d == DType::BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF; }

// [B, heads, T, D] views: out / dout (and a gathered q / dq), q and k / v of qkv (or of dqkv).
std::vector<int64_t> out_strides(const Key& k) { return {k.T * k.H * k.D, k.D, k.H * k.D, 1}; }
std::vector<int64_t> q_strides(const Key& k) {
  if (!k.q_in_place()) return out_strides(k);
  return {k.T * k.token(), k.G == k.H ? 3 * k.D : k.D, k.token(), 1};
}
std::vector<int64_t> kv_strides(const Key& k) { return {k.T * k.token(), (k.per_group() + 2) * k.D, k.token(), 1}; }
std::vector<int64_t> q_dims(const Key& k) { return {k.B, k.H, k.T, k.D}; }
std::vector<int64_t> kv_dims(const Key& k) { return {k.B, k.G, k.T, k.D}; }

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& g, const char* name, int64_t uid,
                                                    std::vector<int64_t> dims, std::vector<int64_t> strides) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(std::move(dims)).set_stride(
      std::move(strides)));
}

// Builds the graph of `k`, or says why not.
Entry build_graph(cudnnHandle_t handle, const Key& k) {
  Entry e;
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe_type(DType(k.dtype)))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const float scale = k.scale;
  auto q = input(*g, "Q", kQ, q_dims(k), q_strides(k));
  auto kk = input(*g, "K", kK, kv_dims(k), kv_strides(k));
  auto v = input(*g, "V", kV, kv_dims(k), kv_strides(k));
  const std::vector<int64_t> stats_dim{k.B, k.H, k.T, 1}, stats_stride{k.H * k.T, k.T, 1, 1};
  if (!k.backward) {
    auto opts =
        fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_causal_mask(true).set_attn_scale(
            scale);
    auto [o, stats] = g->sdpa(q, kk, v, opts);
    o->set_output(true).set_uid(kO).set_dim(q_dims(k)).set_stride(out_strides(k));
    stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim(stats_dim).set_stride(
        stats_stride);
  } else {
    auto o = input(*g, "O", kO, q_dims(k), out_strides(k));
    auto dO = input(*g, "dO", kDO, q_dims(k), out_strides(k));
    auto stats = g->tensor(fe::graph::Tensor_attributes()
                               .set_name("Stats")
                               .set_uid(kStats)
                               .set_dim(stats_dim)
                               .set_stride(stats_stride)
                               .set_data_type(fe::DataType_t::FLOAT));
    auto opts =
        fe::graph::SDPA_backward_attributes().set_name("sdpa_backward").set_causal_mask(true).set_attn_scale(scale);
    if (k.deterministic) opts.set_deterministic_algorithm(true);
    auto [dq, dk, dv] = g->sdpa_backward(q, kk, v, o, dO, stats, opts);
    dq->set_output(true).set_uid(kDQ).set_dim(q_dims(k)).set_stride(q_strides(k));
    dk->set_output(true).set_uid(kDK).set_dim(kv_dims(k)).set_stride(kv_strides(k));
    dv->set_output(true).set_uid(kDV).set_dim(kv_dims(k)).set_stride(kv_strides(k));
  }
  fe::error_t st = g->validate();
  if (st.is_good()) st = g->build_operation_graph(handle);
  if (st.is_good()) st = g->create_execution_plans({fe::HeurMode_t::A});
  if (st.is_good()) st = g->check_support(handle);
  if (st.is_good())
    st = g->build_plans(handle, attention_autotune() ? fe::BuildPlanPolicy_t::ALL : fe::BuildPlanPolicy_t::HEURISTICS_CHOICE);
  if (st.is_good()) st = g->get_workspace_size(e.workspace);
  if (st.is_good()) e.plans = g->get_execution_plan_count();
  if (st.is_bad()) {
    e.why = "cuDNN: " + st.get_message();
    return e;
  }
  e.graph = std::move(g);
  return e;
}

Entry build(cudnnHandle_t handle, const Key& k) {
  try {
    return build_graph(handle, k);
  } catch (const std::exception& ex) {  // the frontend throws on some invalid graphs
    Entry e;
    e.why = std::string("cuDNN frontend: ") + ex.what();
    return e;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Times the heuristic's plan (graph->execute, candidate 0) and each built plan (candidate i + 1
// is plan i) on this call's tensors, and keeps the fastest in e.plan / e.workspace.
void choose_plan(cudnnHandle_t handle, Entry& e, std::unordered_map<int64_t, void*>& ptrs, Device dev,
                 cudaStream_t stream) {
  const int64_t plans = e.plans;
  e.plans = 1;
  std::vector<int64_t> sizes(size_t(plans), -1);
  int64_t most = e.workspace;
  for (int64_t i = 0; i < plans; ++i)
    if (e.graph->get_workspace_size_plan_at_index(i, sizes[size_t(i)]).is_good())
      most = std::max(most, sizes[size_t(i)]);
  Tensor workspace;
  if (most > 0) workspace = Tensor::empty({(most + 3) / 4}, DType::F32, dev);
  void* ws = workspace.defined() ? workspace.raw() : nullptr;
  const int best = autotune_pick(
      int(plans) + 1,
      [&](int i) {
        if (i == 0) return e.graph->execute(handle, ptrs, ws).is_good();
        return sizes[size_t(i - 1)] >= 0 && e.graph->execute_plan_at_index(handle, ptrs, ws, i - 1).is_good();
      },
      stream);
  if (best > 0) {
    e.plan = best - 1;
    e.workspace = sizes[size_t(e.plan)];
  }
}

// Copies `rows` rows of `width` bytes from src (rows src_pitch bytes apart) to dst (dst_pitch apart).
void copy_rows(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t width, int64_t rows,
               cudaStream_t stream) {
  MT_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(dst_pitch), src, size_t(src_pitch), size_t(width), size_t(rows),
                                  cudaMemcpyDeviceToDevice, stream));
}

// Checks what cuDNN is given to, finds or builds the graph and runs it with `ptrs`; dqkv is null
// in forward.
bool run(const char* op, const Tensor& qkv, const Tensor* dqkv, const AttentionConfig& cfg,
         std::unordered_map<int64_t, void*> ptrs, Stream s, std::string* why) {
  const bool backward = dqkv != nullptr;
  auto no = [&](std::string w) {
    if (why) *why = std::move(w);
    return false;
  };
  const DType dt = qkv.dtype();
  if (dt != DType::BF16 && dt != DType::F16) return no("cuDNN flash attention needs bf16 or fp16");
  if (cfg.dropout_p > 0.0f) return no("dropout > 0 runs the native kernel (our Philox mask)");
  if (cfg.head_dim % 8 != 0 || cfg.head_dim > 256) return no("head dim must be a multiple of 8, at most 256");
  for (auto& [uid, p] : ptrs)
    if (!aligned16(p)) return no("tensors must be 16-byte aligned");
  const Key key{qkv.size(0), qkv.size(1), cfg.n_heads, cfg.groups(), cfg.head_dim, int(dt), backward,
                backward && attention_deterministic(), cfg.scale()};
  const int device = qkv.device().index;
  CudaDeviceGuard guard(device);
  DeviceContext& ctx = context(device);
  std::lock_guard<std::mutex> lock(ctx.mu);
  auto it = ctx.graphs.find(key);
  if (it == ctx.graphs.end()) {
    it = ctx.graphs.emplace(key, build(ctx.handle, key)).first;
    if (!it->second.graph) {
      // Say so once per shape: the native kernel is correct but slower.
      std::fprintf(stderr, "megatron: %s: cuDNN attention unavailable for B=%lld T=%lld H=%lld G=%lld D=%lld %s (%s); "
                   "using the native kernel\n", op, (long long)key.B, (long long)key.T, (long long)key.H,
                   (long long)key.G, (long long)key.D, dt == DType::BF16 ? "bf16" : "fp16", it->second.why.c_str());
    }
  }
  Entry& e = it->second;
  if (!e.graph) return no(e.why);
  const cudaStream_t stream = static_cast<cudaStream_t>(s.handle);
  MT_CUDNN_CHECK(cudnnSetStream(ctx.handle, stream));
  // q (and dq) through a contiguous [B, T, H, D] where qkv's query heads are not evenly spaced:
  // B*T*G rows of H/G heads, (H/G + 2) heads apart in qkv.
  Tensor q_buf, dq_buf;
  const int64_t es = int64_t(dtype_size(dt)), group_bytes = key.per_group() * key.D * es,
                group_pitch = (key.per_group() + 2) * key.D * es, rows = key.B * key.T * key.G;
  if (!key.q_in_place()) {
    q_buf = Tensor::empty({key.B, key.T, key.H, key.D}, dt, qkv.device());
    copy_rows(q_buf.raw(), group_bytes, ptrs.at(kQ), group_pitch, group_bytes, rows, stream);
    ptrs[kQ] = q_buf.raw();
    if (backward) {
      dq_buf = Tensor::empty({key.B, key.T, key.H, key.D}, dt, qkv.device());
      ptrs[kDQ] = dq_buf.raw();
    }
  }
  if (e.plans > 1) {
    const int64_t plans = e.plans;
    choose_plan(ctx.handle, e, ptrs, qkv.device(), stream);
    if (std::getenv("MT_AUTOTUNE_LOG"))
      std::fprintf(stderr, "megatron: %s B=%lld T=%lld H=%lld G=%lld D=%lld: %lld cuDNN plans, running %s\n", op,
                   (long long)key.B, (long long)key.T, (long long)key.H, (long long)key.G, (long long)key.D,
                   (long long)plans,
                   e.plan < 0 ? "the heuristic's" : ("plan " + std::to_string(e.plan)).c_str());
  }
  Tensor workspace;
  if (e.workspace > 0) workspace = Tensor::empty({(e.workspace + 3) / 4}, DType::F32, qkv.device());
  void* ws = workspace.defined() ? workspace.raw() : nullptr;
  fe::error_t st =
      e.plan < 0 ? e.graph->execute(ctx.handle, ptrs, ws) : e.graph->execute_plan_at_index(ctx.handle, ptrs, ws, e.plan);
  MT_CHECK(st.is_good(), "{}: cuDNN execute failed: {}", op, st.get_message());
  if (dq_buf.defined()) copy_rows(dqkv->raw(), group_pitch, dq_buf.raw(), group_bytes, group_bytes, rows, stream);
  return true;
}

char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.raw()) + elements * int64_t(dtype_size(t.dtype()));
}

}  // namespace

bool cudnn_attention_forward(const Tensor& qkv, const Tensor& out, const Tensor& lse, const AttentionConfig& cfg,
                             Stream s, std::string* why) {
  const int64_t k_at = int64_t(cfg.heads_per_group()) * cfg.head_dim;  // group 0's key head; its value head follows
  return run("attention_forward", qkv, nullptr, cfg,
             {{kQ, at(qkv, 0)},
              {kK, at(qkv, k_at)},
              {kV, at(qkv, k_at + cfg.head_dim)},
              {kO, out.raw()},
              {kStats, lse.raw()}},
             s, why);
}

bool cudnn_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                              const Tensor& dqkv, const AttentionConfig& cfg, Stream s, std::string* why) {
  const int64_t k_at = int64_t(cfg.heads_per_group()) * cfg.head_dim;
  return run("attention_backward", qkv, &dqkv, cfg,
             {{kQ, at(qkv, 0)},
              {kK, at(qkv, k_at)},
              {kV, at(qkv, k_at + cfg.head_dim)},
              {kO, out.raw()},
              {kDO, dout.raw()},
              {kStats, lse.raw()},
              {kDQ, at(dqkv, 0)},
              {kDK, at(dqkv, k_at)},
              {kDV, at(dqkv, k_at + cfg.head_dim)}},
             s, why);
}

}  // namespace mt::cuda
