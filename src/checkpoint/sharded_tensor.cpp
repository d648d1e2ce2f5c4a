#include "checkpoint/sharded_tensor.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace mt {

ShardedTensor ShardedTensor::whole(std::string name, const Tensor& data) {
  ShardedTensor t;
  t.name = std::move(name);
  t.global_shape = data.shape();
  t.data = data;
  return t;
}

ShardedTensor ShardedTensor::slice(std::string name, const Tensor& data, const Shape& global_shape, int dim,
                                   int64_t start) {
  ShardedTensor t;
  t.name = std::move(name);
  t.global_shape = global_shape;
  t.local_shape = data.shape();
  t.global_offset.assign(global_shape.size(), 0);
  MT_CHECK(dim >= 0 && size_t(dim) < global_shape.size(), "slice dim {} of {}", dim, shape_str(global_shape));
  t.global_offset[size_t(dim)] = start;
  t.data = data;
  return t;
}

ShardedTensor normalized(const ShardedTensor& in, const char* what) {
  ShardedTensor t = in;
  const size_t n = t.global_shape.size();
  auto bad = [&](const std::string& why) {
    MT_USER_ERROR("{} tensor \"{}\" (global shape {}): {}", what, t.name, shape_str(t.global_shape), why);
  };
  if (t.name.empty()) bad("the name is empty");
  if (t.global_offset.empty()) t.global_offset.assign(n, 0);
  if (t.local_shape.empty() && n > 0) {
    for (int64_t o : t.global_offset)
      if (o != 0) bad("a box with an offset needs its local shape");
    t.local_shape = t.global_shape;
  }
  if (t.global_offset.size() != n || t.local_shape.size() != n)
    bad(fmt::format("offset {} and local shape {} must have {} dimensions", shape_str(t.global_offset),
                    shape_str(t.local_shape), n));
  for (size_t d = 0; d < n; ++d)
    if (t.global_shape[d] < 0 || t.global_offset[d] < 0 || t.local_shape[d] < 0 ||
        t.global_offset[d] + t.local_shape[d] > t.global_shape[d])
      bad(fmt::format("the box at {} of extent {} does not lie within the tensor", shape_str(t.global_offset),
                      shape_str(t.local_shape)));
  const int64_t box = shape_numel(t.local_shape);
  if (t.flat_end < 0) t.flat_end = box;
  if (t.flat_begin < 0 || t.flat_begin > t.flat_end || t.flat_end > box)
    bad(fmt::format("flat range [{}, {}) is not within the box of {} elements", t.flat_begin, t.flat_end, box));
  if (!t.data.defined()) bad("no data tensor");
  if (!t.data.is_contiguous()) bad("the data tensor is not contiguous");
  if (t.data.numel() != t.flat_end - t.flat_begin)
    bad(fmt::format("data {} holds {} elements, the piece has {}", t.data.str(), t.data.numel(),
                    t.flat_end - t.flat_begin));
  return t;
}

int64_t piece_numel(const ShardedTensor& t) { return t.flat_end - t.flat_begin; }

PieceBox box_of(const ShardedTensor& t) { return PieceBox{t.global_offset, t.local_shape, t.flat_begin, t.flat_end}; }

namespace {

float load_f(const uint8_t* p, DType t) {
  switch (t) {
    case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::BF16: { bf16 h; std::memcpy(&h, p, 2); return to_f32(h); }
    case DType::F16: { f16 h; std::memcpy(&h, p, 2); return to_f32(h); }
    default: return 0.0f;
  }
}

void store_f(uint8_t* p, DType t, float f) {
  switch (t) {
    case DType::F32: std::memcpy(p, &f, 4); break;
    case DType::BF16: { bf16 h = to_bf16(f); std::memcpy(p, &h, 2); break; }
    case DType::F16: { f16 h = to_f16(f); std::memcpy(p, &h, 2); break; }
    default: break;
  }
}

bool float_type(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

void convert(const uint8_t* src, DType st, uint8_t* dst, DType dt, int64_t n) {
  if (st == dt) {
    std::memcpy(dst, src, size_t(n) * dtype_size(st));
    return;
  }
  const size_t ss = dtype_size(st), ds = dtype_size(dt);
  for (int64_t i = 0; i < n; ++i) store_f(dst + size_t(i) * ds, dt, load_f(src + size_t(i) * ss, st));
}


// Calls fn(src_element, dst_element, count) for every run of elements that the stored piece
// `src` and the requested piece `dst` share, positions counted from each piece's first element.
template <class Fn>
void for_each_overlap_run(const PieceBox& src, const PieceBox& dst, Fn&& fn) {
  const size_t n = src.shape.size();
  MT_CHECK(dst.shape.size() == n && src.offset.size() == n && dst.offset.size() == n, "overlap of boxes of unequal rank");
  Shape lo(n), ext(n);
  for (size_t d = 0; d < n; ++d) {
    lo[d] = std::max(src.offset[d], dst.offset[d]);
    int64_t hi = std::min(src.offset[d] + src.shape[d], dst.offset[d] + dst.shape[d]);
    if (hi <= lo[d]) return;
    ext[d] = hi - lo[d];
  }
  // Runs contiguous in both boxes: dimension j and every later one where the overlap spans
  // both boxes entirely.
  size_t j = n == 0 ? 0 : n - 1;
  while (j > 0 && ext[j] == src.shape[j] && ext[j] == dst.shape[j]) --j;
  int64_t run = 1;
  for (size_t d = j; d < n; ++d) run *= ext[d];
  Shape sstr(n, 1), dstr(n, 1);
  for (size_t d = n; d-- > 1;) {
    sstr[d - 1] = sstr[d] * src.shape[d];
    dstr[d - 1] = dstr[d] * dst.shape[d];
  }
  Shape idx(j, 0);  // odometer over the dimensions before j
  for (;;) {
    int64_t sf = 0, df = 0;
    for (size_t d = 0; d < n; ++d) {
      int64_t g = lo[d] + (d < j ? idx[d] : 0);
      sf += (g - src.offset[d]) * sstr[d];
      df += (g - dst.offset[d]) * dstr[d];
    }
    int64_t t0 = std::max({int64_t(0), src.flat_begin - sf, dst.flat_begin - df});
    int64_t t1 = std::min({run, src.flat_end - sf, dst.flat_end - df});
    if (t0 < t1) fn(sf + t0 - src.flat_begin, df + t0 - dst.flat_begin, t1 - t0);
    size_t d = j;
    for (;;) {
      if (d == 0) return;
      --d;
      if (++idx[d] < ext[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

int64_t overlap_numel(const PieceBox& a, const PieceBox& b) {
  int64_t total = 0;
  for_each_overlap_run(a, b, [&](int64_t, int64_t, int64_t len) { total += len; });
  return total;
}

int64_t copy_overlap(const PieceBox& src, const void* src_data, DType src_dtype, const PieceBox& dst, void* dst_data,
                     DType dst_dtype) {
  MT_CHECK(src_dtype == dst_dtype || (float_type(src_dtype) && float_type(dst_dtype)),
           "copy_overlap from {} to {}", dtype_name(src_dtype), dtype_name(dst_dtype));
  const size_t ses = dtype_size(src_dtype), des = dtype_size(dst_dtype);
  const uint8_t* s = static_cast<const uint8_t*>(src_data);
  uint8_t* o = static_cast<uint8_t*>(dst_data);
  int64_t copied = 0;
  for_each_overlap_run(src, dst, [&](int64_t so, int64_t dof, int64_t len) {
    convert(s + size_t(so) * ses, src_dtype, o + size_t(dof) * des, dst_dtype, len);
    copied += len;
  });
  return copied;
}

namespace {

// The part of tensor l that checkpoints hold: its first `rows` local rows (dim 0), i.e. the
// first `rows * row_numel` elements of its local box; all of it without stored_rows.
struct StoredPart {
  int64_t rows, numel;
};
StoredPart stored_part(const FlatTensorLayout& l) {
  const int64_t numel = shape_numel(l.local_shape);
  if (l.stored_rows < 0 || l.local_shape.empty()) return {l.local_shape.empty() ? 1 : l.local_shape[0], numel};
  const int64_t row0 = l.shard_dim == 0 ? l.shard_start : 0;
  const int64_t rows = std::clamp(l.stored_rows - row0, int64_t(0), l.local_shape[0]);
  return {rows, l.local_shape[0] == 0 ? 0 : rows * (numel / l.local_shape[0])};
}

}  // namespace

std::vector<ShardedTensor> shard_flat_buffer(const std::vector<FlatTensorLayout>& tensors, const std::string& prefix,
                                             const Tensor& flat, int64_t lo, int dp_replica, int tp_rank) {
  std::vector<ShardedTensor> out;
  const int64_t hi = lo + flat.numel();
  for (const FlatTensorLayout& l : tensors) {
    const int64_t numel = shape_numel(l.local_shape);
    const int64_t a = std::max(lo, l.offset), b = std::min(hi, l.offset + numel);
    if (a >= b) continue;
    ShardedTensor t;
    t.name = prefix + l.name;
    t.global_shape = l.global_shape.empty() ? l.local_shape : l.global_shape;
    t.local_shape = l.local_shape;
    t.global_offset.assign(t.global_shape.size(), 0);
    if (l.shard_dim >= 0) {
      MT_CHECK(size_t(l.shard_dim) < t.global_shape.size(), "{}: shard_dim {}", l.name, l.shard_dim);
      t.global_offset[size_t(l.shard_dim)] = l.shard_start;
    }
    // The elements [e0, e1) of the tensor's local box that this part of the buffer holds.
    int64_t e0 = a - l.offset, e1 = b - l.offset;
    if (l.stored_rows >= 0) {
      MT_CHECK(!t.global_shape.empty() && l.stored_rows <= t.global_shape[0], "{}: stored_rows {} of {}", l.name,
               l.stored_rows, shape_str(t.global_shape));
      const StoredPart sp = stored_part(l);
      t.global_shape[0] = l.stored_rows;
      t.local_shape[0] = sp.rows;
      t.allow_extra_rows = true;
      e1 = std::min(e1, sp.numel);
      if (e0 >= e1) continue;  // only padding
    }
    const int64_t box = shape_numel(t.local_shape);
    if (e0 == 0 && e1 == box) {
      t.data = flat.flat_slice(l.offset - lo, box, t.local_shape);
    } else {
      t.flat_begin = e0;
      t.flat_end = e1;
      t.data = flat.flat_slice(l.offset + e0 - lo, e1 - e0, {e1 - e0});
    }
    t.replica_id = dp_replica + (l.shard_dim < 0 ? tp_rank : 0) + (l.duplicate ? 1 : 0);
    out.push_back(std::move(t));
  }
  return out;
}

void zero_unstored_rows(const std::vector<FlatTensorLayout>& tensors, const Tensor& flat, int64_t lo) {
  const int64_t hi = lo + flat.numel();
  for (const FlatTensorLayout& l : tensors) {
    if (l.stored_rows < 0) continue;
    const int64_t pad0 = l.offset + stored_part(l).numel, pad1 = l.offset + shape_numel(l.local_shape);
    const int64_t a = std::max(lo, pad0), b = std::min(hi, pad1);
    if (a < b) flat.flat_slice(a - lo, b - a, {b - a}).zero_();
  }
}

}  // namespace mt
