#pragma once
// Small whole-tensor ops used by layers and the optimizer. Contiguous tensors; float dtypes
// unless stated. Reductions are deterministic: fixed-size chunks reduced in a fixed order,
// whatever the thread count.
#include <cstdint>

#include "core/tensor.h"

namespace mt {

// out = a + b (out may alias a or b). All three of one dtype.
void add(const Tensor& a, const Tensor& b, const Tensor& out, Stream s = {});
// x *= alpha
void scale_(const Tensor& x, float alpha, Stream s = {});
// sum of x^2 in fp64 (fp32 within a chunk). Synchronises on CUDA.
double sum_squares(const Tensor& x, Stream s = {});
// true when no element is inf or nan. Synchronises on CUDA.
bool all_finite(const Tensor& x, Stream s = {});
// Number of elements equal to zero (+0 or -0). Synchronises on CUDA.
int64_t count_zeros(const Tensor& x, Stream s = {});
// dst = src converted to dst's dtype (float dtypes; equal numel).
void cast(const Tensor& src, const Tensor& dst, Stream s = {});
// t[i] = std * N(0,1) drawn from philox(seed, stream, index_offset + i).
void fill_normal(const Tensor& t, float std, uint64_t seed, uint64_t stream, int64_t index_offset = 0,
                 Stream s = {});
// t[i] = value
void fill(const Tensor& t, float value, Stream s = {});
// Zeroes t[offset, offset + length) for each row (offset, length) of ranges: int64 [R, 2] on t's
// device (one launch for all of them on CUDA). Ranges must lie inside t; t is fp32.
void zero_ranges(const Tensor& t, const Tensor& ranges, Stream s = {});
// A strided block copy (cudaMemcpy2D's shape), in elements of the tensors' common dtype:
//   dst[dst_offset + r dst_pitch + c] = src[src_offset + r src_pitch + c],  r < rows, c < width.
// Packs and unpacks the chunks of context parallelism's all-to-all (heads <-> tokens). Every row
// must lie inside both tensors; src and dst must not overlap.
void copy_2d(const Tensor& src, int64_t src_offset, int64_t src_pitch, const Tensor& dst, int64_t dst_offset,
             int64_t dst_pitch, int64_t width, int64_t rows, Stream s = {});

}  // namespace mt
