#include "train/batch.h"

#include <vector>

namespace mt {

Batch get_batch(const SampleSource& source, int64_t first, int batch, int seq_length, Device device) {
  Batch b;
  Tensor tokens = Tensor::empty({batch, seq_length}, DType::I32);
  Tensor labels = Tensor::empty({batch, seq_length}, DType::I32);
  Tensor mask = Tensor::empty({batch, seq_length}, DType::F32);
  const int32_t masked = source.loss_mask_token();
  float* m = mask.data<float>();
  std::vector<int32_t> sample(size_t(seq_length) + 1);
  int32_t* t = tokens.data<int32_t>();
  int32_t* l = labels.data<int32_t>();
  for (int i = 0; i < batch; ++i) {
    source.get(first + i, sample.data());
    for (int j = 0; j < seq_length; ++j) {
      t[i * seq_length + j] = sample[j];
      l[i * seq_length + j] = sample[j + 1];
      m[i * seq_length + j] = sample[j] == masked ? 0.0f : 1.0f;
    }
  }
  b.tokens = device.is_cpu() ? tokens : tokens.to(device);
  b.labels = device.is_cpu() ? labels : labels.to(device);
  b.loss_mask = mask;
  return b;
}

}  // namespace mt
