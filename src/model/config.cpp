#include "model/config.h"

namespace mt {

int64_t pad_vocab_size(int64_t vocab, int64_t divisible_by) {
  if (divisible_by <= 1) return vocab;
  return (vocab + divisible_by - 1) / divisible_by * divisible_by;
}

}  // namespace mt
