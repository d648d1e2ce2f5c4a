#include "train/batch.h"

#include <vector>

#include "core/error.h"

namespace mt {
namespace {

// The local tokens' indices in the [B, S] grid: all of them, or this context-parallel rank's chunks.
std::vector<TokenRun> local_runs(int batch, int seq, const BatchLayout& l) {
  std::vector<TokenRun> runs;
  if (l.cp_size == 1) {
    for (int b = 0; b < batch; ++b) runs.push_back({int64_t(b) * seq, int64_t(b) * seq, seq});
    return runs;
  }
  const int64_t chunk = seq / (2 * l.cp_size), local = 2 * chunk;
  for (int b = 0; b < batch; ++b) {
    runs.push_back({b * local, int64_t(b) * seq + l.cp_rank * chunk, chunk});
    runs.push_back({b * local + chunk, int64_t(b) * seq + (2 * l.cp_size - 1 - l.cp_rank) * chunk, chunk});
  }
  return runs;
}

}  // namespace

Batch get_batch(const SampleSource& source, int64_t first, int batch, int seq_length, Device device,
                const BatchLayout& layout) {
  MT_CHECK(seq_length % (2 * layout.cp_size) == 0 || layout.cp_size == 1,
           "sequence {} not divisible by 2 x {} context-parallel ranks", seq_length, layout.cp_size);
  const std::vector<TokenRun> runs = local_runs(batch, seq_length, layout);
  const int64_t local = layout.cp_size == 1 ? seq_length : seq_length / layout.cp_size;
  const int64_t n = int64_t(batch) * local;
  Tensor tokens = Tensor::empty({batch, local}, DType::I32);
  Tensor labels = Tensor::empty({batch, local}, DType::I32);
  Tensor mask = Tensor::empty({batch, local}, DType::F32);
  const bool explicit_positions = layout.explicit_positions();
  // seq_index | position ids | documents, uploaded in one copy.
  Tensor where = Tensor::empty({3, batch, local}, DType::I32);
  int32_t* seq_index = where.data<int32_t>();
  int32_t* position = seq_index + n;
  int32_t* document = position + n;
  const int32_t masked = source.loss_mask_token();
  const size_t S = size_t(seq_length);
  std::vector<int32_t> sample(S + 1), pos(S), doc(S);
  int32_t* t = tokens.data<int32_t>();
  int32_t* l = labels.data<int32_t>();
  float* m = mask.data<float>();
  size_t run = 0;
  for (int b = 0; b < batch; ++b) {
    source.get(first + b, sample.data());
    int32_t p = 0, d = 0;
    for (int j = 0; j < seq_length; ++j) {  // the token after an end of document starts the next one
      pos[size_t(j)] = layout.reset_position_ids ? p++ : j;
      doc[size_t(j)] = d;
      if (sample[size_t(j)] == layout.eod) p = 0, d += layout.reset_attention_mask ? 1 : 0;
    }
    for (; run < runs.size() && runs[run].global < int64_t(b + 1) * seq_length; ++run) {
      const TokenRun& r = runs[run];
      for (int64_t k = 0; k < r.count; ++k) {
        const int64_t i = r.local + k, j = r.global + k - int64_t(b) * seq_length;
        t[i] = sample[size_t(j)];
        l[i] = sample[size_t(j) + 1];
        m[i] = sample[size_t(j)] == masked ? 0.0f : 1.0f;
        seq_index[i] = int32_t(j);
        position[i] = pos[size_t(j)];
        document[i] = doc[size_t(j)];
      }
    }
  }
  Batch out;
  out.tokens = device.is_cpu() ? tokens : tokens.to(device);
  out.labels = device.is_cpu() ? labels : labels.to(device);
  out.loss_mask = mask;
  if (explicit_positions) {
    const Tensor on = device.is_cpu() ? where : where.to(device);
    TokenPositions& tp = out.positions;
    tp.seq = seq_length;
    tp.seq_index = on.flat_slice(0, n, {batch, local});
    if (layout.reset_position_ids) tp.position_ids = on.flat_slice(n, n, {batch, local});
    if (layout.reset_attention_mask) tp.document = on.flat_slice(2 * n, n, {batch, local});
    tp.runs = runs;
  }
  return out;
}

}  // namespace mt
