// add_layernorm_forward and layernorm_backward_add on the CPU are, bit for bit, the unfused
// sequences layernorm.h defines them by (add then layernorm_forward; layernorm_backward then
// add), so a CPU model computes exactly what it did with the separate ops; sum may alias x.
#include "kernels/elementwise.h"
#include "kernels/kernel_testing.h"
#include "kernels/layernorm.h"

namespace mt {
namespace {

using namespace mt::testing;

class LayerNormAddCpu : public ::testing::TestWithParam<DType> {};

TEST_P(LayerNormAddCpu, IsAddThenLayerNormAndLayerNormBackwardThenAdd) {
  const DType dt = GetParam();
  const int64_t N = 37, C = 100;
  Tensor x = random_tensor({N, C}, dt, 1, -2, 3), r = random_tensor({N, C}, dt, 2);
  Tensor w = random_tensor({C}, dt, 3, 0.5, 1.5), b = random_tensor({C}, dt, 4);
  Tensor sum = Tensor::empty({N, C}, dt), y = Tensor::empty({N, C}, dt);
  Tensor mean = Tensor::empty({N}, DType::F32), rstd = Tensor::empty({N}, DType::F32);
  add_layernorm_forward(x, r, w, b, 1e-5f, sum, y, mean, rstd);

  Tensor sum_ref = Tensor::empty({N, C}, dt), y_ref = Tensor::empty({N, C}, dt);
  Tensor mean_ref = Tensor::empty({N}, DType::F32), rstd_ref = Tensor::empty({N}, DType::F32);
  add(x, r, sum_ref);
  layernorm_forward(sum_ref, w, b, 1e-5f, y_ref, mean_ref, rstd_ref);
  EXPECT_TRUE(bitwise_equal(sum, sum_ref));
  EXPECT_TRUE(bitwise_equal(y, y_ref));
  EXPECT_TRUE(bitwise_equal(mean, mean_ref));
  EXPECT_TRUE(bitwise_equal(rstd, rstd_ref));

  Tensor in_place = Tensor::empty({N, C}, dt), y2 = Tensor::empty({N, C}, dt);  // sum written over x
  in_place.copy_from(x);
  add_layernorm_forward(in_place, r, w, b, 1e-5f, in_place, y2, mean, rstd);
  EXPECT_TRUE(bitwise_equal(in_place, sum_ref));
  EXPECT_TRUE(bitwise_equal(y2, y_ref));

  Tensor dy = random_tensor({N, C}, dt, 5), dres = random_tensor({N, C}, dt, 6);
  Tensor dw = random_tensor({C}, DType::F32, 7), db = random_tensor({C}, DType::F32, 8);
  Tensor dw_ref = random_tensor({C}, DType::F32, 7), db_ref = random_tensor({C}, DType::F32, 8);
  Tensor dx = Tensor::empty({N, C}, dt), dx_ref = Tensor::empty({N, C}, dt);
  layernorm_backward_add(dy, sum, w, mean, rstd, dres, dx, dw, db);
  layernorm_backward(dy, sum, w, mean_ref, rstd_ref, dx_ref, dw_ref, db_ref);
  add(dx_ref, dres, dx_ref);
  EXPECT_TRUE(bitwise_equal(dx, dx_ref));
  EXPECT_TRUE(bitwise_equal(dw, dw_ref));
  EXPECT_TRUE(bitwise_equal(db, db_ref));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LayerNormAddCpu, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace mt
