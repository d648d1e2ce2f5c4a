#pragma once
// CPU implementations of kernels/kv_cache.h (arguments checked by the dispatcher).
#include "core/tensor.h"
#include "kernels/attention.h"

namespace mt::cpu {

void kv_cache_append(const Tensor& qkv, const Tensor& start, const Tensor& k_cache, const Tensor& v_cache);
void kv_cache_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                        const Tensor& out, const AttentionConfig& cfg);

}  // namespace mt::cpu
