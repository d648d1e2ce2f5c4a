// Dispatch and argument checks for elementwise.h.
#include "kernels/elementwise.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dispatch.h"

namespace mt {

void add(const Tensor& a, const Tensor& b, const Tensor& out, Stream s) {
  using namespace detail;
  check_float("add", "a", a);
  check_float("add", "b", b);
  check_float("add", "out", out);
  MT_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), "add: {} + {} -> {} must share a dtype", a.str(),
           b.str(), out.str());
  check_numel("add", "b", b, a.numel());
  check_numel("add", "out", out, a.numel());
  if (on_cuda("add", {&a, &b, &out})) MT_CUDA_CALL(add(a, b, out, s));
  cpu::add(a, b, out);
}

void scale_(const Tensor& x, float alpha, Stream s) {
  detail::check_float("scale_", "x", x);
  if (detail::on_cuda("scale_", {&x})) MT_CUDA_CALL(scale_(x, alpha, s));
  cpu::scale_(x, alpha);
}

double sum_squares(const Tensor& x, Stream s) {
  detail::check_float("sum_squares", "x", x);
  if (detail::on_cuda("sum_squares", {&x})) MT_CUDA_CALL(sum_squares(x, s));
  return cpu::sum_squares(x);
}

bool all_finite(const Tensor& x, Stream s) {
  detail::check_float("all_finite", "x", x);
  if (detail::on_cuda("all_finite", {&x})) MT_CUDA_CALL(all_finite(x, s));
  return cpu::all_finite(x);
}

int64_t count_zeros(const Tensor& x, Stream s) {
  detail::check_float("count_zeros", "x", x);
  if (detail::on_cuda("count_zeros", {&x})) MT_CUDA_CALL(count_zeros(x, s));
  return cpu::count_zeros(x);
}

void cast(const Tensor& src, const Tensor& dst, Stream s) {
  detail::check_float("cast", "src", src);
  detail::check_float("cast", "dst", dst);
  detail::check_numel("cast", "dst", dst, src.numel());
  if (detail::on_cuda("cast", {&src, &dst})) MT_CUDA_CALL(cast(src, dst, s));
  cpu::cast(src, dst);
}

void fill_normal(const Tensor& t, float std, uint64_t seed, uint64_t stream, int64_t index_offset, Stream s) {
  detail::check_float("fill_normal", "t", t);
  MT_CHECK(index_offset >= 0, "fill_normal: index_offset {} must be >= 0", index_offset);
  if (detail::on_cuda("fill_normal", {&t})) MT_CUDA_CALL(fill_normal(t, std, seed, stream, index_offset, s));
  cpu::fill_normal(t, std, seed, stream, index_offset);
}

void fill(const Tensor& t, float value, Stream s) {
  detail::check_float("fill", "t", t);
  if (detail::on_cuda("fill", {&t})) MT_CUDA_CALL(fill(t, value, s));
  cpu::fill(t, value);
}

void zero_ranges(const Tensor& t, const Tensor& ranges, Stream s) {
  MT_CHECK(t.dtype() == DType::F32 && t.is_contiguous(), "zero_ranges: t {} must be contiguous fp32", t.str());
  MT_CHECK(ranges.dtype() == DType::I64 && ranges.dim() == 2 && ranges.size(1) == 2,
           "zero_ranges: ranges {} must be int64 [R, 2]", ranges.str());
  if (ranges.size(0) == 0) return;
  if (detail::on_cuda("zero_ranges", {&t, &ranges})) MT_CUDA_CALL(zero_ranges(t, ranges, s));
  cpu::zero_ranges(t, ranges);
}

void copy_2d(const Tensor& src, int64_t src_offset, int64_t src_pitch, const Tensor& dst, int64_t dst_offset,
             int64_t dst_pitch, int64_t width, int64_t rows, Stream s) {
  MT_CHECK(src.dtype() == dst.dtype(), "copy_2d: {} -> {} must share a dtype", src.str(), dst.str());
  MT_CHECK(src.is_contiguous() && dst.is_contiguous(), "copy_2d: contiguous tensors, got {} and {}", src.str(),
           dst.str());
  MT_CHECK(width >= 0 && rows >= 0 && src_offset >= 0 && dst_offset >= 0 && src_pitch >= width && dst_pitch >= width,
           "copy_2d: {} rows of {} elements, pitches {} and {}", rows, width, src_pitch, dst_pitch);
  if (rows == 0 || width == 0) return;
  MT_CHECK(src_offset + (rows - 1) * src_pitch + width <= src.numel(), "copy_2d: rows outside src {}", src.str());
  MT_CHECK(dst_offset + (rows - 1) * dst_pitch + width <= dst.numel(), "copy_2d: rows outside dst {}", dst.str());
  if (detail::on_cuda("copy_2d", {&src, &dst}))
    MT_CUDA_CALL(copy_2d(src, src_offset, src_pitch, dst, dst_offset, dst_pitch, width, rows, s));
  cpu::copy_2d(src, src_offset, src_pitch, dst, dst_offset, dst_pitch, width, rows);
}

}  // namespace mt
