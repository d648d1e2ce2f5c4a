#pragma once
// Megatron's "theoretical memory footprint" per rank, made exact for what this build's layers
// keep: a pure function from the model config and the rank's place in the layout to predicted
// bytes (weights, fp32 main grads, optimizer state, the activations each layer's Saved holds for
// every microbatch in flight, and the largest temporary on top of them), and its printing at
// start-up and, next to the measured peak, at the end of training.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/gpt_model.h"

namespace mt {

// One rank's share of the work.
struct MemoryLayout {
  int tp = 1, cp = 1, dp = 1, ep = 1, pp = 1, pp_rank = 0;
  bool sequence_parallel = false;
  bool distributed_optimizer = false;
  int micro_batch_size = 1;
  int num_microbatches = 1;              // per iteration on this rank: global / (micro x DP)
  std::vector<ModelChunkConfig> chunks;  // this rank's chunks (virtual stages), num_layers resolved
  bool adam = true;                      // Adam's two moments (SGD: one momentum buffer)
  // Round every tensor up to the host allocator's block (its size classes), as measured on CPU.
  bool host_blocks = false;
};

struct MemoryEstimate {  // bytes on one rank
  int64_t weights = 0, grads = 0, optimizer = 0;
  int64_t activations_per_microbatch = 0;  // kept from forward to backward, all chunks
  double microbatches_in_flight = 1;       // 1F1B: min(M, P - rank); interleaved: Megatron's warm-up count
  int64_t activations = 0;                 // per microbatch x in flight
  int64_t transient = 0;                   // the largest temporary on top at the peak
  int64_t data = 0;                        // the batches' tokens, labels, loss masks, losses
  int64_t peak() const { return weights + grads + optimizer + activations + transient + data; }
};

// ModelChunkConfig::num_layers must be resolved (>= 0).
MemoryEstimate estimate_memory(const TransformerConfig& cfg, const MemoryLayout& layout);

// Rank 0 prints one line per rank (gathered over `world`): Megatron's theoretical memory
// footprint in MiB. Collective over world.
class Communicator;
void print_memory_report(std::FILE* log, const MemoryEstimate& mine, Communicator& world, bool first_rank,
                         const std::vector<std::string>& rank_names);

}  // namespace mt
