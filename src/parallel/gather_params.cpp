#include "parallel/gather_params.h"

#include <cstring>

#include "core/error.h"
#include "kernels/elementwise.h"

namespace mt {

Tensor gather_full_parameter(const ParamAndGradBuffer& buf, ParamAndGradBuffer::Id id, Communicator* tp) {
  const ParamInfo& p = buf.info(id);
  Tensor local = Tensor::empty(p.shape, DType::F32);
  Tensor src = buf.param(id);
  Tensor host = src.device().is_cpu() ? src : src.to(Device::cpu());
  cast(host, local);
  if (!p.tensor_parallel()) return local;
  MT_CHECK(tp && tp->size() > 1, "parameter {} is sharded but no tensor-parallel group was given", p.name);
  const int n = tp->size();
  MT_CHECK(p.shape[size_t(p.shard_dim)] * n == p.global_shape[size_t(p.shard_dim)],
           "parameter {}: shards of {} do not tile {} over {} ranks", p.name, shape_str(p.shape),
           shape_str(p.global_shape), n);
  Tensor all = Tensor::empty({p.numel * n}, DType::F32);
  tp->all_gather(local.view({p.numel}), all);
  if (p.shard_dim == 0) return all.view(p.global_shape);
  // Shards along dim d: rank r's block of the inner extent sits at r * inner_local in each outer row.
  int64_t outer = 1, inner_local = 1;
  for (int i = 0; i < p.shard_dim; ++i) outer *= p.shape[size_t(i)];
  for (size_t i = size_t(p.shard_dim); i < p.shape.size(); ++i) inner_local *= p.shape[i];
  Tensor full = Tensor::empty(p.global_shape, DType::F32);
  const float* a = all.data<float>();
  float* f = full.data<float>();
  for (int r = 0; r < n; ++r)
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(f + (o * n + r) * inner_local, a + int64_t(r) * p.numel + o * inner_local,
                  size_t(inner_local) * sizeof(float));
  return full;
}

}  // namespace mt
