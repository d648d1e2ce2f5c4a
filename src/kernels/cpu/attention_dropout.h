#pragma once
// Attention dropout's factors on the CPU (attention.h, attention_block.h): the factor of mask
// index idx is keep ? 1/(1-p) : 0 with keep = uniform(word idx & 3 of philox_block(seed, stream,
// idx >> 2)) > p, so one Philox block serves four consecutive indices. The CUDA kernels draw the
// same with philox_uniform (core/rng.h), so every backend and every split of the work sees one mask.
#include <cstdint>

#include "core/rng.h"

namespace mt::cpu {

struct DropMask {
  float p, inv_keep;
  uint64_t seed, stream;

  // z[0..n) = the factors of mask indices first, first+1, ... (a run of consecutive keys).
  void factors(uint64_t first, int64_t n, float* z) const {
    uint32_t r[4];
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t idx = first + uint64_t(j);
      if (j == 0 || (idx & 3) == 0) philox_block(seed, stream, idx >> 2, r);
      z[j] = u32_to_uniform(r[idx & 3]) > p ? inv_keep : 0.0f;
    }
  }
};

// The factor of any mask index, keeping the last Philox block: keys at consecutive positions
// (the usual case, also inside a load-balanced chunk) cost one block per four, as factors() does.
struct DropDraw {
  const DropMask& mask;
  uint64_t block = ~uint64_t(0);
  uint32_t r[4] = {};
  float operator()(uint64_t idx) {
    if ((idx >> 2) != block) {
      block = idx >> 2;
      philox_block(mask.seed, mask.stream, block, r);
    }
    return u32_to_uniform(r[idx & 3]) > mask.p ? mask.inv_keep : 0.0f;
  }
};

}  // namespace mt::cpu
