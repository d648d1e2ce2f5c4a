#pragma once
// CUDA implementations of kernels/kv_cache.h (arguments checked by the dispatcher). Kept out of
// cuda_ops.h so the op family stays in its own files.
#include "core/tensor.h"
#include "kernels/attention.h"

namespace mt::cuda {

void kv_cache_append(const Tensor& qkv, const Tensor& start, const Tensor& k_cache, const Tensor& v_cache, Stream s);
void kv_cache_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                        const Tensor& out, const AttentionConfig& cfg, Stream s);

}  // namespace mt::cuda
