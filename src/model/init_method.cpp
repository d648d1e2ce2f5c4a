#include "model/init_method.h"

#include "core/rng.h"
#include "kernels/elementwise.h"

namespace mt {

void init_normal(const ParamAndGradBuffer& buf, ParamAndGradBuffer::Id id, float std, uint64_t seed) {
  const ParamInfo& p = buf.info(id);
  const uint64_t stream = rng_stream("init/" + p.name);
  if (!p.tensor_parallel()) {
    fill_normal(buf.param(id), std, seed, stream);
    return;
  }
  // A tensor-parallel shard draws the Philox numbers of the global (row-major) element indices
  // it holds, so its values are those of the same elements in the single-rank model.
  const size_t d = size_t(p.shard_dim);
  int64_t inner_global = 1, inner_local = 1, outer = 1;
  for (size_t i = d + 1; i < p.shape.size(); ++i) inner_global *= p.global_shape[i];
  for (size_t i = 0; i < d; ++i) outer *= p.shape[i];
  inner_local = p.shape[d] * inner_global;  // one outer index's contiguous run in the shard
  const int64_t row_global = p.global_shape[d] * inner_global;
  const Tensor& flat = buf.params();
  for (int64_t o = 0; o < outer; ++o)
    fill_normal(flat.flat_slice(p.offset + o * inner_local, inner_local, {inner_local}), std, seed, stream,
                o * row_global + p.shard_start * inner_global);
}

}  // namespace mt
