// Dispatch and argument checks for kv_cache.h.
#include "kernels/kv_cache.h"

#include "kernels/cpu/kv_cache.h"
#include "kernels/dispatch.h"
#ifdef MT_WITH_CUDA
#include "kernels/cuda/kv_cache.h"
#endif

namespace mt {
namespace {

// qkv [B, T, G, S', D] (S' >= 3) and caches [B, S, G, D] of one float dtype; start int32 [B].
void check_cache(const char* op, const Tensor& qkv, const Tensor& start, const Tensor& k_cache,
                 const Tensor& v_cache) {
  using namespace detail;
  check_float(op, "qkv", qkv);
  check_float(op, "k_cache", k_cache);
  check_float(op, "v_cache", v_cache);
  check_dtype(op, "start", start, DType::I32);
  MT_CHECK(qkv.dim() == 5 && qkv.size(3) >= 3, "{}: qkv {} must be [B, T, G, H/G + 2, D]", op, qkv.str());
  const int64_t B = qkv.size(0), G = qkv.size(2), D = qkv.size(4);
  MT_CHECK(k_cache.dim() == 4 && k_cache.size(0) == B && k_cache.size(2) == G && k_cache.size(3) == D,
           "{}: k_cache {} must be [B = {}, S, G = {}, D = {}]", op, k_cache.str(), B, G, D);
  check_like(op, "v_cache", v_cache, k_cache);
  MT_CHECK(k_cache.dtype() == qkv.dtype(), "{}: k_cache {} must have qkv {}'s dtype", op, k_cache.str(), qkv.str());
  check_shape(op, "start", start, {B});
  MT_CHECK(qkv.size(1) <= k_cache.size(1), "{}: {} new tokens do not fit a cache of {} slots", op, qkv.size(1),
           k_cache.size(1));
  // On the host the positions can be checked; on a device they are the caller's guarantee.
  if (!start.is_cuda())
    for (int64_t b = 0; b < B; ++b) {
      const int32_t s0 = start.data<int32_t>()[b];
      MT_CHECK(s0 >= 0 && s0 + qkv.size(1) <= k_cache.size(1), "{}: sequence {} starts at {}: {} tokens past {} slots",
               op, b, s0, qkv.size(1), k_cache.size(1));
    }
}

}  // namespace

void kv_cache_append(const Tensor& qkv, const Tensor& start, const Tensor& k_cache, const Tensor& v_cache,
                     Stream s) {
  check_cache("kv_cache_append", qkv, start, k_cache, v_cache);
  if (detail::on_cuda("kv_cache_append", {&qkv, &start, &k_cache, &v_cache}))
    MT_CUDA_CALL(kv_cache_append(qkv, start, k_cache, v_cache, s));
  cpu::kv_cache_append(qkv, start, k_cache, v_cache);
}

void kv_cache_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                        const Tensor& out, const AttentionConfig& cfg, Stream s) {
  using namespace detail;
  const char* op = "kv_cache_attention";
  check_cache(op, qkv, start, k_cache, v_cache);
  check_float(op, "out", out);
  const int64_t H = cfg.n_heads, G = cfg.groups(), D = cfg.head_dim;
  MT_CHECK(H > 0 && D > 0 && H % G == 0, "{}: n_heads {} must be a positive multiple of n_query_groups {}", op, H, G);
  MT_CHECK(cfg.dropout_p == 0.0f, "{}: no dropout in inference (dropout_p = {})", op, cfg.dropout_p);
  const int64_t B = qkv.size(0), T = qkv.size(1);
  check_shape(op, "qkv", qkv, {B, T, G, H / G + 2, D});
  check_shape(op, "out", out, {B, T, H, D});
  MT_CHECK(out.dtype() == qkv.dtype(), "{}: out {} must have qkv's dtype", op, out.str());
  if (on_cuda(op, {&qkv, &k_cache, &v_cache, &start, &out}))
    MT_CUDA_CALL(kv_cache_attention(qkv, k_cache, v_cache, start, out, cfg, s));
  cpu::kv_cache_attention(qkv, k_cache, v_cache, start, out, cfg);
}

}  // namespace mt
