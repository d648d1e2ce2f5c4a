// Tensor (core/tensor.h): a view over shared storage; views and slices alias their parent,
// copies do not.
#include <gtest/gtest.h>

#include "core/tensor.h"

namespace mt {
namespace {

Tensor iota(int64_t n) {
  Tensor t = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = float(i);
  return t;
}

TEST(Tensor, EmptyHasContiguousStridesAndDtypeSizes) {
  Tensor t = Tensor::empty({2, 3, 4}, DType::BF16);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(t.str(), "bf16[2, 3, 4] cpu");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);  // host blocks are 64-byte aligned
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, ZerosIsZero) {
  Tensor t = Tensor::zeros({1000}, DType::I32);
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(t.data<int32_t>()[i], 0);
}

TEST(Tensor, ViewReshapesTheSameMemoryAndInfersOneDim) {
  Tensor t = iota(12);
  Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 4}));
  EXPECT_EQ(v.raw(), t.raw());
  v.data<float>()[5] = 42;
  EXPECT_EQ(t.data<float>()[5], 42);
}

TEST(Tensor, FlatSliceAndNarrowAliasTheParent) {
  Tensor t = iota(12).view({4, 3});
  Tensor rows = t.narrow0(1, 2);
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.data<float>()[0], 3);
  Tensor s = t.flat_slice(5, 4, {2, 2});
  EXPECT_EQ(s.data<float>()[0], 5);
  s.data<float>()[3] = -1;
  EXPECT_EQ(t.data<float>()[8], -1);
  Tensor s2 = s.flat_slice(1, 2, {2});  // a slice of a slice keeps the offsets adding up
  EXPECT_EQ(s2.data<float>()[0], 6);
  EXPECT_EQ(s2.data<float>()[1], 7);
}

TEST(Tensor, SlicesKeepTheStorageAlive) {
  Tensor s;
  {
    Tensor t = iota(8);
    s = t.flat_slice(4, 4, {4});
  }
  EXPECT_EQ(s.data<float>()[3], 7);
}

TEST(Tensor, CopyFromAndToCopyData) {
  Tensor a = iota(6), b = Tensor::zeros({2, 3}, DType::F32);
  b.copy_from(a);  // equal numel, shapes may differ
  EXPECT_EQ(b.data<float>()[5], 5);
  Tensor c = a.to(Device::cpu());
  EXPECT_NE(c.raw(), a.raw());
  c.data<float>()[0] = 9;
  EXPECT_EQ(a.data<float>()[0], 0);
  a.zero_();
  EXPECT_EQ(a.data<float>()[5], 0);
  EXPECT_EQ(b.data<float>()[5], 5);
}

TEST(Tensor, FromBlobWrapsForeignMemory) {
  float buf[4] = {1, 2, 3, 4};
  Tensor t = Tensor::from_blob(buf, {2, 2}, DType::F32);
  EXPECT_EQ(t.raw(), static_cast<void*>(buf));
  t.data<float>()[3] = 8;
  EXPECT_EQ(buf[3], 8);
}

TEST(Tensor, ShapeHelpers) {
  EXPECT_EQ(shape_numel({2, 3, 5}), 30);
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_str({4, 1}), "[4, 1]");
  DType d;
  EXPECT_TRUE(parse_dtype("bfloat16", d));
  EXPECT_EQ(d, DType::BF16);
  EXPECT_FALSE(parse_dtype("fp8", d));
}

}  // namespace
}  // namespace mt
