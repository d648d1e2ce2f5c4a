// argmax_rows on the CPU: the first maximum among the valid columns (padding columns past
// n_valid never win), for each storage dtype.
#include "kernels/argmax.h"

#include "kernels/kernel_testing.h"

namespace mt {
namespace {

using namespace mt::testing;

TEST(Argmax, FirstMaximumOfTheValidColumns) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    // Row 0: a tie at columns 1 and 3; row 1: the largest value sits in padding (column 4).
    Tensor logits = from_vec({0.5f, 2.0f, -1.0f, 2.0f, 0.0f, -3.0f, 1.0f, 0.25f, 1.0f, 9.0f}, {2, 5}, dt);
    Tensor out = Tensor::empty({2}, DType::I32);
    argmax_rows(logits, 4, out);
    EXPECT_EQ(out.data<int32_t>()[0], 1);
    EXPECT_EQ(out.data<int32_t>()[1], 1);
    argmax_rows(logits, 5, out);
    EXPECT_EQ(out.data<int32_t>()[1], 4);
  }
}

}  // namespace
}  // namespace mt
