#pragma once
// ShardedTensor (Megatron-Core's dist_checkpointing name): one rank's piece of a global tensor,
// the unit that checkpoints are saved and loaded in. A piece is an N-D box of the global tensor
// (tensor-parallel shards are row or column blocks) and, optionally, only the flattened range
// [flat_begin, flat_end) of that box in row-major order (the distributed optimizer shards the
// flat buffer, so a rank may hold part of a box). Saving and loading only compare boxes, so a
// checkpoint written under one layout loads under any other: resharding on load.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mt {

struct ShardedTensor {
  std::string name;     // global: "decoder.layers.0.mlp.linear_fc1.weight", "optimizer.exp_avg.<param>"
  Shape global_shape;
  Shape global_offset;  // where the box starts; empty: all zeros
  Shape local_shape;    // the box's extent; empty: the whole global tensor
  int64_t flat_begin = 0, flat_end = -1;  // range within the flattened box; flat_end -1: all of it
  // Saving writes only pieces with replica_id 0 (a data-parallel or tensor-parallel duplicate
  // passes nonzero); loading fills every request whatever its replica_id.
  int replica_id = 0;
  // Saving: the piece's values. Loading: where they go. Contiguous, host or device, with
  // local_shape (whole box) or flat_end - flat_begin elements (a flattened range; any shape).
  Tensor data;
  bool allow_missing = false;  // loading: absent from the checkpoint leaves data untouched
  // Loading: the checkpoint's tensor may have more rows (dim 0) than global_shape, the other
  // dimensions equal; the extra rows are not read. Vocabulary-padded tensors set it, so a
  // checkpoint that stored the padding rows (written before padding was stripped) still loads.
  bool allow_extra_rows = false;

  // A whole, unsharded tensor.
  static ShardedTensor whole(std::string name, const Tensor& data);
  // The slice [start, start + data.size(dim)) along `dim` of a tensor of global_shape.
  static ShardedTensor slice(std::string name, const Tensor& data, const Shape& global_shape, int dim, int64_t start);
};

// Resolves defaults (empty offset/local shape, flat_end -1) and checks that the box lies in the
// global tensor, the flat range in the box, and data holds exactly the piece (UserError naming
// the tensor and `what`: "saving" / "loading").
ShardedTensor normalized(const ShardedTensor& t, const char* what);
int64_t piece_numel(const ShardedTensor& t);  // of a normalized tensor

// A piece's geometry without its data.
struct PieceBox {
  Shape offset, shape;               // box within the global tensor
  int64_t flat_begin = 0, flat_end;  // range within the flattened box
};
PieceBox box_of(const ShardedTensor& normalized_tensor);

// How many elements a stored piece and a requested piece of the same tensor have in common.
int64_t overlap_numel(const PieceBox& a, const PieceBox& b);

// Copies the elements common to a stored piece `src` (contiguous bytes of dtype `src_dtype`) and
// a requested piece `dst` (bytes of `dst_dtype`) of the same global tensor; returns how many.
// Float types convert (f32/bf16/f16, rounding to nearest even); other dtypes must match.
int64_t copy_overlap(const PieceBox& src, const void* src_data, DType src_dtype, const PieceBox& dst, void* dst_data,
                     DType dst_dtype);

// One tensor's place in a flat buffer (a ParamAndGradBuffer, or optimizer state of the same
// layout) and in its global tensor.
struct FlatTensorLayout {
  std::string name;
  Shape local_shape;
  int64_t offset = 0;  // element offset in the flat buffer
  Shape global_shape;  // empty: same as local_shape
  int shard_dim = -1;  // tensor parallelism: this rank holds [shard_start, +local_shape[shard_dim])
  int64_t shard_start = 0;
  // >= 0: only global rows [0, stored_rows) go into checkpoints and are read back; the rest is
  // padding (the vocabulary padded to a multiple of make-vocab-size-divisible-by x TP, which
  // differs between layouts). The checkpoint's global shape then has stored_rows rows.
  int64_t stored_rows = -1;
  bool duplicate = false;  // a copy another rank saves (a nonzero replica_id): loaded, not written
};

// The pieces of `flat`, which holds elements [lo, lo + flat.numel()) of a flat buffer laid out
// as `tensors`: each tensor that overlaps it becomes one ShardedTensor named prefix + name (a
// whole box, or a flat range of the box when only part of it is held). replica_id is
// `dp_replica` plus, for tensors not split by tensor parallelism, `tp_rank`: model weights pass
// (dp rank, tp rank); the distributed optimizer's shard (0, tp rank). Rows at or past a
// tensor's stored_rows are left out (a piece holding only such rows is dropped), and its pieces
// allow_extra_rows.
std::vector<ShardedTensor> shard_flat_buffer(const std::vector<FlatTensorLayout>& tensors, const std::string& prefix,
                                             const Tensor& flat, int64_t lo, int dp_replica = 0, int tp_rank = 0);

// Zeroes the elements of `flat` (elements [lo, lo + flat.numel()) of a flat buffer laid out as
// `tensors`, host or device) that lie in rows at or past a tensor's stored_rows: the padding a
// checkpoint does not hold, set the way the model initialises it.
void zero_unstored_rows(const std::vector<FlatTensorLayout>& tensors, const Tensor& flat, int64_t lo);

}  // namespace mt
