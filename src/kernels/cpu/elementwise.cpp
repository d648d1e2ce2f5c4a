// Whole-tensor elementwise ops on the CPU: one read of each input and one write of the output per
// element, in parallel over elements. The reductions (sum_squares, all_finite) cut the tensor
// into fixed chunks of kChunk elements: each chunk is summed in fp32 in eight interleaved lanes
// added in a fixed order, and the chunk sums are added in order in fp64, so the result does not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/load_store.h"

namespace mt::cpu {
namespace {

constexpr int64_t kChunk = 4096;

int64_t chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

// Calls fn(T*) with x's storage.
template <class Fn>
void with_data(const Tensor& x, Fn&& fn) {
  dispatch_float(x.dtype(), [&](auto tag) { fn(x.data<decltype(tag)>()); });
}

}  // namespace

void add(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t n = a.numel();
  dispatch_float(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* po = out.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) po[i] = from_f32<T>(to_f32(pa[i]) + to_f32(pb[i]));
  });
}

void scale_(const Tensor& x, float alpha) {
  const int64_t n = x.numel();
  with_data(x, [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = from_f32<T>(to_f32(p[i]) * alpha);
  });
}

double sum_squares(const Tensor& x) {
  const int64_t n = x.numel(), nc = chunks(n);
  std::vector<float> partial(size_t(nc), 0.0f);
  with_data(x, [&](auto* p) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t begin = c * kChunk, len = std::min(n, begin + kChunk) - begin;
      float s[8] = {};  // element i into lane i % 8: vectorises, and the order depends on n only
      int64_t i = 0;
      for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; ++j) {
          const float v = to_f32(p[begin + i + j]);
          s[j] += v * v;
        }
      for (int j = 0; i + j < len; ++j) {
        const float v = to_f32(p[begin + i + j]);
        s[j] += v * v;
      }
      partial[c] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
  });
  double total = 0.0;
  for (float s : partial) total += double(s);
  return total;
}

int64_t count_zeros(const Tensor& x) {
  const int64_t n = x.numel(), nc = chunks(n);
  int64_t zeros = 0;
  with_data(x, [&](auto* p) {
#pragma omp parallel for schedule(static) reduction(+ : zeros)
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) zeros += to_f32(p[i]) == 0.0f;
    }
  });
  return zeros;
}

bool all_finite(const Tensor& x) {
  const int64_t n = x.numel(), nc = chunks(n);
  int bad = 0;
  with_data(x, [&](auto* p) {
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) bad |= !std::isfinite(to_f32(p[i]));
    }
  });
  return bad == 0;
}

void cast(const Tensor& src, const Tensor& dst) {
  const int64_t n = src.numel();
  with_data(src, [&](auto* s) {
    with_data(dst, [&](auto* d) {
      using D = std::remove_pointer_t<decltype(d)>;
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) d[i] = from_f32<D>(to_f32(s[i]));
    });
  });
}

void fill_normal(const Tensor& t, float std, uint64_t seed, uint64_t stream, int64_t index_offset) {
  const int64_t n = t.numel();
  with_data(t, [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = from_f32<T>(std * philox_normal(seed, stream, uint64_t(index_offset + i)));
  });
}

void zero_ranges(const Tensor& t, const Tensor& ranges) {
  const int64_t* r = ranges.data<int64_t>();
  float* p = t.data<float>();
  for (int64_t i = 0; i < ranges.size(0); ++i) {
    const int64_t off = r[2 * i], len = r[2 * i + 1];
    MT_CHECK(off >= 0 && len >= 0 && off + len <= t.numel(), "zero_ranges: range [{}, {}) outside {} elements", off,
             off + len, t.numel());
    std::fill(p + off, p + off + len, 0.0f);
  }
}

void copy_2d(const Tensor& src, int64_t src_offset, int64_t src_pitch, const Tensor& dst, int64_t dst_offset,
             int64_t dst_pitch, int64_t width, int64_t rows) {
  const size_t e = dtype_size(src.dtype());
  const auto* from = static_cast<const char*>(src.raw()) + size_t(src_offset) * e;
  auto* to = static_cast<char*>(dst.raw()) + size_t(dst_offset) * e;
#pragma omp parallel for schedule(static) if (rows * width > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(to + size_t(r * dst_pitch) * e, from + size_t(r * src_pitch) * e, size_t(width) * e);
}

void fill(const Tensor& t, float value) {
  const int64_t n = t.numel();
  with_data(t, [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    const T v = from_f32<T>(value);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

}  // namespace mt::cpu
